from setuptools import find_packages, setup

setup(
    name="detect",
    version="0.1.0",
    description="Faster R-CNN with deep residual backbones: train, evaluate and reproduce the ResNet paper's detection results.",
    python_requires=">=3.9",
    packages=find_packages(include=["detect", "detect.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.23",
        "pycocotools>=2.0.6",
        "albumentations>=1.4",
        "opencv-python-headless>=4.8",
        "tqdm>=4.60",
        "matplotlib>=3.6",
    ],
    extras_require={
        "tensorboard": ["tensorboard>=2.14"],
        # tools/export.py and running its files: the ONNX exporter (torch.onnx needs onnxscript), onnxruntime
        "export": ["onnx>=1.23,<2", "onnxscript>=0.7,<1", "onnxruntime>=1.32,<2"],
        "test": [
            "pytest>=7",
            "hypothesis>=6.100,<7",
            "tensorboard>=2.14",
            "onnx>=1.23,<2",
            "onnxscript>=0.7,<1",
            "onnxruntime>=1.32,<2",
        ],
    },
)
