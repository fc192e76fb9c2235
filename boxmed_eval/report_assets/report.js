// boxmed-eval report: the significance-matrix selector and the case browser. Everything it
// shows was computed by boxmed_eval/report.py; this script sorts, filters, pages and draws.
(function () {
  "use strict";

  var matrixSelect = document.getElementById("matrix-metric");
  if (matrixSelect) {
    matrixSelect.addEventListener("change", function () {
      document.querySelectorAll("table.matrix").forEach(function (table) {
        table.hidden = table.getAttribute("data-matrix") !== matrixSelect.value;
      });
    });
  }

  var dataNode = document.getElementById("case-data");
  if (!dataNode) { return; }
  var data = JSON.parse(dataNode.textContent);
  var classes = data.classes;
  var PAGE_SIZE = 50;
  var LABEL_TEXT = { "1": "positive", "0": "negative", "u": "uncertain", ".": "" };
  var SVG = "http://www.w3.org/2000/svg";
  var state = { run: 0, key: null, dir: -1, page: 0, shown: [], selected: null };

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") { node.textContent = attrs[name]; } else { node.setAttribute(name, attrs[name]); }
    });
    (children || []).forEach(function (child) {
      if (child !== null && child !== undefined) {
        node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
      }
    });
    return node;
  }

  function svgEl(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined) { return "-"; }
    return Math.abs(value) >= 100 || Number.isInteger(value) ? String(value) : value.toFixed(4);
  }

  function isPositive(code) { return code === "1"; }

  // Classes whose binarised labels (positive = 1, as the CE metrics count) differ.
  function disagreements(entry) {
    var out = [];
    if (!entry || !entry.lr || !entry.lg) { return out; }
    for (var k = 0; k < classes.length; k++) {
      if (isPositive(entry.lr[k]) !== isPositive(entry.lg[k])) { out.push(k); }
    }
    return out;
  }

  function runInfo() { return data.runs[state.run]; }

  function keys() {
    var info = runInfo();
    var out = [{ key: "id", label: "Study", kind: "text" }];
    info.columns.forEach(function (column, index) {
      out.push({ key: "m" + index, label: info.labels[index], title: column, kind: "num", index: index });
    });
    if (data.has.labels) { out.push({ key: "ce", label: "CE disagreements", title: "CheXpert classes whose positive label differs", kind: "num" }); }
    return out;
  }

  function value(caseIndex, spec) {
    var record = data.cases[caseIndex];
    var entry = record.runs[state.run];
    if (spec.key === "id") { return record.id; }
    if (!entry) { return null; }
    if (spec.key === "ce") { return entry.lr ? disagreements(entry).length : null; }
    return entry.s ? entry.s[spec.index] : null;
  }

  function matchesSearch(record, entry, needle) {
    if (!needle) { return true; }
    if (record.id.toLowerCase().indexOf(needle) >= 0) { return true; }
    var texts = (record.ref || []).concat(entry.gen.map(function (g) { return g[0]; }));
    return texts.some(function (t) { return t.toLowerCase().indexOf(needle) >= 0; });
  }

  function filtered() {
    var needle = (document.getElementById("case-search").value || "").trim().toLowerCase();
    var metricSelect = document.getElementById("filter-metric");
    var spec = metricSelect.value === "" ? null : keys().filter(function (k) { return k.key === metricSelect.value; })[0];
    var low = parseFloat(document.getElementById("filter-min").value);
    var high = parseFloat(document.getElementById("filter-max").value);
    var classSelect = document.getElementById("filter-class");
    var wantClass = classSelect ? classSelect.value : "";
    var out = [];
    data.cases.forEach(function (record, index) {
      var entry = record.runs[state.run];
      if (!entry || !matchesSearch(record, entry, needle)) { return; }
      if (spec && (!isNaN(low) || !isNaN(high))) {
        var v = value(index, spec);
        if (v === null || (!isNaN(low) && v < low) || (!isNaN(high) && v > high)) { return; }
      }
      if (wantClass !== "") {
        var differ = disagreements(entry);
        if (wantClass === "*" ? differ.length === 0 : differ.indexOf(parseInt(wantClass, 10)) < 0) { return; }
      }
      out.push(index);
    });
    if (state.key !== null) {
      var sortSpec = keys().filter(function (k) { return k.key === state.key; })[0];
      if (sortSpec) {
        var dir = state.dir;
        var values = {};
        out.forEach(function (i) { values[i] = value(i, sortSpec); });
        out.sort(function (a, b) {
          var va = values[a], vb = values[b];
          // Cases without a value stay last in both directions; ties keep the run's order.
          if (va === null && vb === null) { return a - b; }
          if (va === null) { return 1; }
          if (vb === null) { return -1; }
          if (va < vb) { return -dir; }
          if (va > vb) { return dir; }
          return a - b;
        });
      }
    }
    return out;
  }

  function renderHeader() {
    var row = document.querySelector("#cases thead tr");
    row.innerHTML = "";
    keys().forEach(function (spec) {
      var th = el("th", { "data-key": spec.key, title: spec.title || spec.label, text: spec.label });
      if (state.key === spec.key) { th.className = state.dir < 0 ? "sorted-desc" : "sorted-asc"; }
      th.addEventListener("click", function () {
        if (state.key === spec.key) { state.dir = -state.dir; } else { state.key = spec.key; state.dir = spec.kind === "text" ? 1 : -1; }
        state.page = 0;
        refresh();
      });
      row.appendChild(th);
    });
    var select = document.getElementById("filter-metric");
    var previous = select.value;
    select.innerHTML = "";
    select.appendChild(el("option", { value: "", text: "(none)" }));
    keys().forEach(function (spec) {
      if (spec.kind === "num") { select.appendChild(el("option", { value: spec.key, text: spec.label })); }
    });
    select.value = previous;
    if (select.value !== previous) { select.value = ""; }
  }

  function renderRows() {
    var body = document.querySelector("#cases tbody");
    body.innerHTML = "";
    var specs = keys();
    var pages = Math.max(1, Math.ceil(state.shown.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    var start = state.page * PAGE_SIZE;
    state.shown.slice(start, start + PAGE_SIZE).forEach(function (caseIndex) {
      var record = data.cases[caseIndex];
      var tr = el("tr", { "data-id": record.id, "data-index": String(caseIndex) });
      if (state.selected === caseIndex) { tr.className = "selected"; }
      specs.forEach(function (spec) {
        var v = value(caseIndex, spec);
        tr.appendChild(spec.kind === "text" ? el("td", { "class": "id", title: v, text: v })
          : el("td", { "class": "num", text: fmt(v) }));
      });
      tr.addEventListener("click", function () { showCase(caseIndex); });
      body.appendChild(tr);
    });
    document.getElementById("case-count").textContent = state.shown.length + " of " + data.cases.length + " cases";
    document.getElementById("page-info").textContent = "page " + (state.page + 1) + " of " + pages;
    document.getElementById("page-prev").disabled = state.page === 0;
    document.getElementById("page-next").disabled = state.page >= pages - 1;
  }

  function refresh() {
    renderHeader();
    state.shown = filtered();
    renderRows();
  }

  function drawImage(image, gt, pred) {
    var svg = svgEl("svg", { viewBox: "0 0 " + image.w + " " + image.h, "data-image": String(image.i),
      role: "img", "aria-label": "image " + image.i });
    svg.appendChild(svgEl("image", { href: image.src, x: 0, y: 0, width: image.w, height: image.h }));
    [[gt, "box-ref"], [pred, "box-pred"]].forEach(function (pair) {
      pair[0].filter(function (b) { return b[4] === image.i; }).forEach(function (b) {
        var rect = svgEl("rect", { "class": pair[1], x: b[0], y: b[1], width: Math.max(0, b[2] - b[0]),
          height: Math.max(0, b[3] - b[1]) });
        var title = svgEl("title", {});
        title.textContent = (pair[1] === "box-ref" ? "reference: " : "predicted: ") + (b[6] || b[5] || "box");
        rect.appendChild(title);
        svg.appendChild(rect);
      });
    });
    var nGt = gt.filter(function (b) { return b[4] === image.i; }).length;
    var nPred = pred.filter(function (b) { return b[4] === image.i; }).length;
    return el("div", {}, [svg, el("div", { "class": "caption",
      text: "image " + image.i + ": reference boxes " + nGt + " (green), predicted " + nPred + " (red, dashed)" })]);
  }

  function sentences(list, levels, partners, side) {
    var div = el("div", { "class": "report " + side });
    list.forEach(function (sentence, i) {
      var span = el("span", { "class": "sent m" + levels[i], "data-side": side, "data-i": String(i),
        "data-partner": String(partners[i]), text: sentence });
      span.addEventListener("mouseenter", function () { highlight(side, i, partners[i], true); });
      span.addEventListener("mouseleave", function () { highlight(side, i, partners[i], false); });
      div.appendChild(span);
      div.appendChild(document.createTextNode(" "));
    });
    if (!list.length) { div.appendChild(el("i", { text: "(empty)" })); }
    return div;
  }

  function highlight(side, i, partner, on) {
    var other = side === "ref" ? "gen" : "ref";
    var mine = document.querySelector('#case-detail .sent[data-side="' + side + '"][data-i="' + i + '"]');
    var theirs = partner >= 0 ? document.querySelector('#case-detail .sent[data-side="' + other + '"][data-i="' + partner + '"]') : null;
    [mine, theirs].forEach(function (node) { if (node) { node.classList.toggle("hl", on); } });
  }

  function labelsTable(entry) {
    var differ = disagreements(entry);
    var table = el("table", { "class": "data labels" }, [el("thead", {}, [el("tr", {}, [
      el("th", { text: "CheXpert class" }), el("th", { text: "reference" }), el("th", { text: "generated" })])])]);
    var body = el("tbody");
    var blank = 0;
    classes.forEach(function (name, k) {
      // a class neither text mentions says nothing: counted, not listed
      if (entry.lr[k] === "." && entry.lg[k] === ".") { blank += 1; return; }
      var cls = differ.indexOf(k) >= 0 ? "c disagree" : "c";
      body.appendChild(el("tr", { "data-class": name, "class": differ.indexOf(k) >= 0 ? "disagree" : "" }, [
        el("td", { text: name }), el("td", { "class": cls, text: LABEL_TEXT[entry.lr[k]] }),
        el("td", { "class": cls, text: LABEL_TEXT[entry.lg[k]] })]));
    });
    table.appendChild(body);
    var heading = "CheXpert labels: " + differ.length + (differ.length === 1 ? " disagreement" : " disagreements") +
      " (positive on one side only, marked)";
    return el("div", {}, [el("h4", { text: heading }), table,
      blank ? el("p", { "class": "notes", text: blank + " classes mentioned by neither text" }) : null]);
  }

  function judgeBlock(name, entry) {
    var info = runInfo();
    var reply = entry.judges && entry.judges[name];
    var rows = [];
    if (name === "green") {
      data.green_columns.forEach(function (pair) {
        var index = -1;
        pair[1].forEach(function (alias) { if (index < 0) { index = info.columns.indexOf(alias); } });
        if (index >= 0 && entry.s) { rows.push([pair[0], entry.s[index]]); }
      });
      var score = info.columns.indexOf("green");
      if (score >= 0 && entry.s) { rows.unshift(["GREEN score", entry.s[score]]); }
    } else {
      info.columns.forEach(function (column, index) {
        if (column.indexOf("gema_") === 0 && entry.s) { rows.push([info.labels[index], entry.s[index]]); }
      });
    }
    if (!rows.length && !reply) { return null; }
    var table = el("table", { "class": "data" }, [el("tbody", {}, rows.map(function (r) {
      return el("tr", {}, [el("td", { text: r[0] }), el("td", { "class": "num", text: fmt(r[1]) })]);
    }))]);
    return el("div", { "class": "judge", "data-judge": name }, [
      el("h4", { text: name === "green" ? "GREEN judge: error counts and explanation" : "GEMA-Score judge" }),
      rows.length ? table : null,
      reply && reply.problem ? el("p", { "class": "notes", text: "parse problem: " + reply.problem }) : null,
      reply ? el("pre", { text: reply.reply }) : null]);
  }

  function boxList(title, boxes, cls) {
    if (!boxes.length) { return null; }
    return el("div", {}, [el("h4", { "class": cls, text: title }), el("ul", { "class": "boxes" }, boxes.map(function (b) {
      return el("li", { "class": cls, text: (b[6] || b[5] || "box") + " [" + b.slice(0, 4).map(Math.round).join(", ") + "] image " + b[4] });
    }))]);
  }

  function showCase(caseIndex) {
    state.selected = caseIndex;
    var record = data.cases[caseIndex];
    var entry = record.runs[state.run];
    var detail = document.getElementById("case-detail");
    detail.innerHTML = "";
    detail.hidden = false;
    detail.setAttribute("data-id", record.id);
    var gt = record.gt || [];
    var pred = (entry && entry.boxes) || [];
    detail.appendChild(el("h3", { text: record.id + (data.runs.length > 1 ? "  (" + runInfo().name + ")" : "") }));
    var grid = el("div", { "class": "case-grid" });
    if (record.images && record.images.length) {
      grid.appendChild(el("div", { "class": "case-images" }, record.images.map(function (image) { return drawImage(image, gt, pred); })));
    }
    var refLevels = entry ? entry.refm.map(function (m) { return m[0]; }) : [];
    var refPartners = entry ? entry.refm.map(function (m) { return m[1]; }) : [];
    var texts = el("div", { "class": "texts" }, [
      el("div", {}, [el("h4", { "class": "ref", text: "Reference findings" }),
        sentences(record.ref || [], refLevels, refPartners, "ref")]),
      el("div", {}, [el("h4", { "class": "gen", text: "Generated findings" }),
        sentences(entry ? entry.gen.map(function (g) { return g[0]; }) : [], entry ? entry.gen.map(function (g) { return g[1]; }) : [],
          entry ? entry.gen.map(function (g) { return g[2]; }) : [], "gen")])]);
    grid.appendChild(el("div", { style: "flex: 1 1 520px" }, [texts,
      el("p", { "class": "match-legend" }, [el("span", { "class": "sent m2", text: "same sentence" }), " ",
        el("span", { "class": "sent m1", text: "similar sentence" }), " (hover a sentence to see its partner)"]),
      boxList("Reference boxes", gt, "box-ref-text"), boxList("Predicted boxes", pred, "box-pred-text")]));
    detail.appendChild(grid);
    if (entry && entry.reasoning) {
      detail.appendChild(el("h4", { text: "Reasoning" }));
      detail.appendChild(el("div", { "class": "reasoning", text: entry.reasoning }));
    }
    var lower = el("div", { "class": "case-grid" });
    if (entry && entry.lr) { lower.appendChild(labelsTable(entry)); }
    if (entry && entry.s) {
      var info = runInfo();
      lower.appendChild(el("div", { style: "flex: 1 1 300px" }, [el("h4", { text: "Scores of this study" }),
        el("p", { "class": "scores-list" }, info.columns.map(function (column, index) {
          return el("span", { title: column }, [el("b", { text: info.labels[index] + " " }), fmt(entry.s[index])]);
        }))].concat(data.has.judges.map(function (name) { return judgeBlock(name, entry); }))));
    }
    detail.appendChild(lower);
    document.querySelectorAll("#cases tbody tr").forEach(function (tr) {
      tr.classList.toggle("selected", tr.getAttribute("data-index") === String(caseIndex));
    });
  }

  ["case-search", "filter-metric", "filter-min", "filter-max", "filter-class", "case-run"].forEach(function (id) {
    var node = document.getElementById(id);
    if (!node) { return; }
    node.addEventListener(node.tagName === "INPUT" ? "input" : "change", function () {
      if (id === "case-run") { state.run = parseInt(node.value, 10); state.key = null; }
      state.page = 0;
      refresh();
      if (state.selected !== null) { showCase(state.selected); }
    });
  });
  document.getElementById("page-prev").addEventListener("click", function () { state.page -= 1; renderRows(); });
  document.getElementById("page-next").addEventListener("click", function () { state.page += 1; renderRows(); });
  refresh();
  window.boxmedReport = { data: data, state: state, showCase: showCase, refresh: refresh };
})();
