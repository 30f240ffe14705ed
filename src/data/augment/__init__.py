"""The training recipe's augmentations with timm's semantics (DeiT / Conformer):
RandAugment from a policy string, random erasing, and Mixup/CutMix with soft targets."""
from src.data.augment.auto_augment import RandAugment, create_auto_augment, parse_policy, rand_augment_transform
from src.data.augment.mixup import Mixup, create_mixup, mixup_target, smoothed_one_hot
from src.data.augment.random_erasing import RandomErasing
from src.data.augment.random_resized_crop import RandomResizedCrop

__all__ = ["RandAugment", "create_auto_augment", "parse_policy", "rand_augment_transform",
           "Mixup", "create_mixup", "mixup_target", "smoothed_one_hot", "RandomErasing", "RandomResizedCrop"]
