"""Number formatting shared by the CLI tables."""


def codec_label(codec: str, topk_ratio: float) -> str:
    """A compression codec as the tables name it: ``int8``, or ``topk 0.1`` with its ratio."""
    return f"topk {topk_ratio:g}" if codec == "topk" else codec


def human_bytes(n: float) -> str:
    """Bytes in B, KB, MB or GB (powers of 1000)."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"
