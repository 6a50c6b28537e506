"""ALARM: Audio-Language Alignment for Reasoning Models, built on the alarm_kernels toolkit."""

__version__ = "0.1.0"
