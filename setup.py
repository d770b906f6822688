"""segzero_ros: Seg-Zero reasoning segmentation (Qwen2.5-VL reasoning + SAM2 masks) for ROS 2.

`pip install -e .` installs the ROS-free model package `segzero_model` and the `segzero` CLI.
torch, torchvision and sam2 are installed first by scripts/setup.sh (sam2 ships only as an sdist
that must be built against the installed torch, with --no-build-isolation).
"""

from setuptools import find_packages, setup

setup(
    name="segzero_ros",
    version="0.1.0",
    description="Seg-Zero reasoning segmentation as a library, a CLI and a ROS 2 perception node",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # training/ installs as `segzero_training`: sam2's sdist already installs a top-level
    # package named `training` (its own training code), which would shadow ours.
    packages=find_packages(include=["segzero_model", "segzero_model.*", "segzero_ros"])
    + ["segzero_training"],
    package_dir={"segzero_training": "training"},
    package_data={
        "segzero_model": ["assets/*"],
        "segzero_training": ["configs/*.yaml", "configs/*.json"],
    },
    install_requires=[
        "numpy>=1.24",
        "pillow>=10.0",
        "opencv-python-headless>=4.8",
        "torch>=2.5.1",
        "torchvision>=0.20.1",
        "transformers>=4.51,<6",
        # EdgeTAM's backbone (RepViT) is timm's: the edgetam segmenter family needs it.
        "timm>=1.0",
        "tokenizers>=0.21",
        "safetensors>=0.4",
        "accelerate>=1.0",
        "qwen-vl-utils>=0.0.10",
        "sam2>=1.1.0",
        "huggingface-hub>=0.26",
        # the remote reasoner's HTTP client (segzero_model/reasoning/remote.py)
        "httpx2>=2.16",
        "filelock>=3.12",
    ],
    extras_require={
        # transformers[serving]: `transformers serve`, the real server the remote reasoner is
        # tested against (tests/model/reasoning/test_remote_reasoner.py)
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.6",
            "ruff>=0.6",
            "datasets>=3.0",
            "transformers[serving]",
        ],
        "training": [
            "datasets>=3.0",
            "pycocotools>=2.0.8",
            "tqdm>=4.66",
            "trl>=1.16,<2",
            "deepspeed>=0.17",
            "matplotlib>=3.8",
            "pyyaml>=6.0",
            "scipy>=1.11",  # the multi-object rewards' optimal matching
            "peft>=0.20",  # LoRA GRPO (training/lora.py)
        ],
        # QLoRA (load_in_4bit=true): 4-bit base weights, CUDA only
        "qlora": ["bitsandbytes>=0.45"],
    },
    entry_points={
        "console_scripts": [
            "segzero = segzero_model.cli:main",
            "segzero-perception = segzero_ros.main:main",
            "segzero-query = segzero_ros.client:main",
        ]
    },
)
