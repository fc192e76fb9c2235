"""The PHI guard: credentialed data never leaves the machine for a judge server by accident.

MIMIC-CXR and its derivatives (MS-CXR, LATTE-CXR) are PhysioNet credentialed data; their data
use agreement forbids sharing them with third parties, which includes sending report texts to
an external LLM service. A judge server on this machine (loopback) is fine; any other host is
refused for those datasets unless the user passes ``--allow-remote-phi`` (for example a server
their institution runs under the agreement).

What makes this a guarantee rather than a convenience:

- data of unknown provenance counts as credentialed: a remote judge needs a ``--dataset`` that
  names a registered public dataset (``iu_xray``, ``demo``); no dataset, or a name that is not
  registered (a typo), is refused;
- the dataset recorded in run.json wins over a ``--dataset`` or ``--metric-option`` given later:
  nothing the user types can downgrade a credentialed run (:func:`guard_dataset`);
- references carrying MIMIC's de-identification marks (``___``) count as credentialed whatever
  the dataset is called;
- host names are resolved, and only a host whose every address is loopback counts as local;
  the judge then connects to the address that was checked (:func:`pinned_loopback_address`),
  so a name that resolves differently a moment later (DNS rebinding) cannot redirect it;
- judge requests never go through an HTTP(S) proxy (``HTTP_PROXY`` would otherwise carry a
  "loopback" request to another machine) unless ``use_proxy`` is set, and then the proxy's
  own host must pass the same check.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from boxmed_eval.errors import BoxmedError

log = logging.getLogger(__name__)

# Used when the dataset's adapter cannot be looked up (e.g. scoring files produced elsewhere
# with a dataset name given by the user).
CREDENTIALED_NAMES = frozenset({"mimic", "mimic_cxr", "mimic_cxr_jpg", "ms_cxr", "latte_cxr"})

# Every refusal message starts with this (the CLI turns a refusal into a non-zero exit).
PHI_REFUSAL_PREFIX = "refusing to send"

# MIMIC-CXR replaces names, dates and other identifiers with three underscores.
MIMIC_DEID_MARK = "___"


class PHIGuardError(BoxmedError):
    """A credentialed dataset would be sent to a non-loopback judge."""


def is_credentialed(dataset: str | None) -> bool:
    """Whether ``dataset`` (a registry name) is credentialed data."""
    if not dataset:
        return False
    name = dataset.strip().lower().replace("-", "_")
    try:
        from boxmed_eval.datasets.base import DATASETS

        return bool(getattr(DATASETS.get(name), "credentialed", False)) or name in CREDENTIALED_NAMES
    except Exception:  # unknown name or a broken adapter: decide by name
        return name in CREDENTIALED_NAMES or name.startswith("mimic")


def _normalise(dataset: str) -> str:
    return dataset.strip().lower().replace("-", "_")


def is_known_public(dataset: str | None) -> bool:
    """True only for a registered dataset that is not credentialed (``iu_xray``, ``demo``)."""
    if not dataset or is_credentialed(dataset):
        return False
    try:
        from boxmed_eval.datasets.base import DATASETS

        return _normalise(dataset) in DATASETS.names()
    except Exception:  # a broken registry must not open the gate
        return False


def references_look_credentialed(texts: Iterable[str]) -> bool:
    """True when a reference carries MIMIC's ``___`` de-identification marks."""
    return any(isinstance(t, str) and MIMIC_DEID_MARK in t for t in texts)


def guard_dataset(recorded: str | None, given: str | None = None, references: Iterable[str] = ()) -> str | None:
    """The dataset name the PHI guard must use: the most restrictive of the one recorded in
    run.json, the one the user gave, and what the references look like."""
    for name in (recorded, given):
        if name and is_credentialed(name):
            if name is given and recorded and not is_credentialed(recorded):
                log.warning("PHI guard: using the credentialed --dataset %s over run.json's %s", given, recorded)
            return name
    if references_look_credentialed(references):
        log.warning("PHI guard: the references contain MIMIC-style '___' de-identification marks; they are "
                    "treated as credentialed data (mimic)")
        return "mimic"
    if recorded and given and _normalise(recorded) != _normalise(given):
        log.warning("PHI guard: --dataset %s ignored; run.json records dataset %s", given, recorded)
    return recorded or given


def _host_addresses(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return []
    return [info[4][0].split("%", 1)[0] for info in infos]


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is a loopback address, or a name whose every resolved address is
    loopback (127.0.0.0/8, ::1). Names that do not resolve, and ``*.localhost`` names that do
    not resolve to loopback, count as remote (the safe side)."""
    host = (urlsplit(url).hostname or "").strip("[]").lower()
    if not host:
        return False
    addresses = _host_addresses(host)
    if not addresses:
        return False
    try:
        return all(ipaddress.ip_address(a).is_loopback for a in addresses)
    except ValueError:
        return False


def pinned_loopback_address(url: str, dataset: str | None, allow_remote_phi: bool) -> str | None:
    """The loopback address the judge must connect to when only the loopback check lets ``url``
    receive reports of ``dataset`` and its host is a name (None otherwise): connecting to the
    checked address, not to whatever the name resolves to at connection time, closes the gap
    between the check and the connection."""
    if allow_remote_phi or is_known_public(dataset):
        return None
    host = (urlsplit(url).hostname or "").strip("[]").lower()
    try:
        ipaddress.ip_address(host)
        return None  # an address literal is connected to as checked
    except ValueError:
        pass
    addresses = _host_addresses(host)
    if not addresses or not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        raise PHIGuardError(phi_refusal(url, dataset, allow_remote_phi) or f"{PHI_REFUSAL_PREFIX} reports to {host}: "
                            "it no longer resolves to loopback only")
    return addresses[0]


def phi_refusal(url: str, dataset: str | None, allow_remote_phi: bool) -> str | None:
    """Why ``url`` must not receive reports of ``dataset``, or None when it may."""
    if allow_remote_phi or is_loopback_url(url) or is_known_public(dataset):
        return None
    host = urlsplit(url).hostname or url
    if not is_credentialed(dataset):
        which = f"dataset {dataset!r} is not a registered public dataset" if dataset else "no dataset was named"
        return (f"refusing to send reports to the judge server at {host}: {which}, so the reports may be "
                "credentialed data (MIMIC-CXR or a derivative). Pass --dataset NAME of the public dataset they "
                "come from (e.g. iu_xray; see `boxmed-eval datasets`), run the judge on this machine "
                "(127.0.0.1/localhost), or, only if that server is covered by your data use agreement, pass "
                "--allow-remote-phi")
    return (f"refusing to send {dataset!r} reports to the judge server at {host}: {dataset} is PhysioNet "
            "credentialed data (MIMIC-CXR or a derivative) whose data use agreement forbids sharing it with "
            "third-party services. Run the judge on this machine (a local model directory, or a server on "
            "127.0.0.1/localhost), or, only if that server is covered by your data use agreement, pass "
            "--allow-remote-phi")


def check_remote_judge(url: str, dataset: str | None, allow_remote_phi: bool) -> None:
    """Raise :class:`PHIGuardError` when :func:`phi_refusal` refuses."""
    refusal = phi_refusal(url, dataset, allow_remote_phi)
    if refusal:
        raise PHIGuardError(refusal)
    if allow_remote_phi and not is_known_public(dataset) and not is_loopback_url(url):
        log.warning("sending %s reports to %s because --allow-remote-phi was given", dataset, url)
