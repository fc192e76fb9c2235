"""The PHI guard: credentialed data never leaves the machine for a judge server by accident.

MIMIC-CXR and its derivatives (MS-CXR, LATTE-CXR) are PhysioNet credentialed data; their data
use agreement forbids sharing them with third parties, which includes sending report texts to
an external LLM service. A judge server on this machine (loopback) is fine; any other host is
refused for those datasets unless the user passes ``--allow-remote-phi`` (for example a server
their institution runs under the agreement).
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from boxmed_eval.errors import BoxmedError

log = logging.getLogger(__name__)

# Used when the dataset's adapter cannot be looked up (e.g. scoring files produced elsewhere
# with a dataset name given by the user).
CREDENTIALED_NAMES = frozenset({"mimic", "mimic_cxr", "mimic_cxr_jpg", "ms_cxr", "latte_cxr"})


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


def is_loopback_url(url: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1). Host names are not
    resolved: a name that happens to resolve to loopback still counts as remote (safe side)."""
    host = (urlsplit(url).hostname or "").strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def phi_refusal(url: str, dataset: str | None, allow_remote_phi: bool) -> str | None:
    """Why ``url`` must not receive reports of ``dataset``, or None when it may."""
    if allow_remote_phi or is_loopback_url(url) or not is_credentialed(dataset):
        return None
    host = urlsplit(url).hostname or url
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
    if allow_remote_phi and is_credentialed(dataset) and not is_loopback_url(url):
        log.warning("sending %s reports to %s because --allow-remote-phi was given", dataset, url)
