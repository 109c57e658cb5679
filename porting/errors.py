"""The one exception type for a user's mistakes."""


class PortingError(ValueError):
    """Bad input to `porting`: the message names the value received and what was expected.

    Subclasses ValueError so that ``except ValueError`` in user code also catches it.
    """


class MissingDependencyError(ImportError):
    """An optional dependency (TensorFlow, matplotlib, juliacall, ...) is not installed.

    The message says what to install. The CLI prints it and exits 2.
    """
