"""Is there a CUDA device to run on? One check shared by the GPU commands (calibrate, validate)."""

from __future__ import annotations

from moesim.errors import UserError


def require_cuda(command: str, device_index: int = 0) -> None:
    """Raise UserError (exit 1, one line) unless torch sees CUDA device `device_index`."""
    try:
        import torch
    except ImportError:
        raise UserError(f"no CUDA device: {command} needs a GPU (torch is not installed: "
                        "pip install 'moesim[gpu]')") from None
    if not torch.cuda.is_available():
        raise UserError(f"no CUDA device: {command} needs a GPU")
    if not 0 <= device_index < torch.cuda.device_count():
        raise UserError(f"no CUDA device {device_index}: this host has {torch.cuda.device_count()}", "--device")
