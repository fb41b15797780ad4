"""What the legacy upgrade returns and raises (:class:`UpgradeResult`, :class:`UpgradeError`) and
the root messages it works on: shared by the step modules, the checks and the driver
(:mod:`rewriter.upgrade.document`), so none of them has to import another for these.
"""

from __future__ import annotations

from rewriter.errors import Diagnostic, Location, RewriterError
from rewriter.text.cst import Document
from rewriter.util.record import Record

NET = "caffe.NetParameter"
SOLVER = "caffe.SolverParameter"


class UpgradeError(RewriterError):
    """Caffe would refuse this upgrade (or the result failed verification): where and why."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        self.diagnostic = Diagnostic("error", message, location, None, "upgrade")
        self.message = message
        super().__init__(self.diagnostic.render())


class UpgradeResult(Record):
    """What :func:`upgrade_document` did.

    ``messages`` are Caffe's own log lines for the steps taken (``upgrade_proto.cpp``, in order,
    with ``param_file`` = the document's path); ``deliberate_differences`` lists, for this file,
    every way the result knowingly differs from what Caffe's tool would have written (beyond
    comments and layout, which are always kept). The upgrade's records are Records, not
    dataclasses: ~1 ms less each at start-up.
    """

    __slots__ = (
        "document",
        "changed",
        "messages",
        "deliberate_differences",
        "kind",
        "warnings",
    )

    def __init__(
        self,
        document: Document,
        changed: bool,
        messages: list[str] | None = None,
        deliberate_differences: list[str] | None = None,
        kind: str = "net",
        warnings: list[str] | None = None,
    ) -> None:
        self.document = document
        self.changed = changed
        self.messages: list[str] = [] if messages is None else messages
        self.deliberate_differences: list[str] = (
            [] if deliberate_differences is None else deliberate_differences
        )
        self.kind = kind
        #: problems of the net that the upgrade kept as they were (e.g. Net::Init refuses it)
        self.warnings: list[str] = [] if warnings is None else warnings


#: SolverParameter fields holding a whole NetParameter
EMBEDDED_NETS = ("net_param", "train_net_param", "test_net_param")
