"""Describe the machine a benchmark ran on (printed with every result)."""

from __future__ import annotations

import os
import platform


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return info


def describe() -> str:
    m = machine()
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ", no GPU"
    return f"{m['cpu']} ({m['cpu_cores']} cores, torch threads {m['torch_threads']}){gpu}; torch {m['torch']}"
