"""lvmmed: open self-supervised pretraining for medical imaging foundation models (LVM-Med graph matching)."""

__version__ = "0.1.0"


def create_backbone(*args, **kwargs):
    """Lazy alias of :func:`lvmmed.models.create_backbone` (keeps ``import lvmmed`` light)."""
    from lvmmed.models import create_backbone as _create

    return _create(*args, **kwargs)
