"""physdiff: generating physical dynamics with diffusion models under priors.

Method: Zhou, Wang & Yu, "Generating Physical Dynamics under Priors", ICLR 2025 (arXiv 2409.00730).
"""

__version__ = "0.1.0"
