"""Evaluation protocols on one skeleton: linear, SED and fine-tuning; their losses and augmentation."""
