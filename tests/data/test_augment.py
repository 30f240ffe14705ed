"""timm semantics of RandAugment, Mixup/CutMix and RandomErasing, on hand-worked cases."""
import math
import random

import numpy as np
import pytest
from PIL import Image

from src.data.augment import Mixup, RandAugment, RandomErasing, create_auto_augment, mixup_target, parse_policy, \
    rand_augment_transform, smoothed_one_hot
from src.data.augment import auto_augment as aa
from src.data.augment.mixup import cutmix_box


class ScriptedRng:
    """A stand-in for random.Random whose draws are given in advance."""

    def __init__(self, randoms=(), lams=(), positions=()):
        self.randoms, self.lams, self.positions = list(randoms), list(lams), list(positions)
        self.alphas = []

    def random(self):
        return self.randoms.pop(0)

    def betavariate(self, alpha, beta):
        assert alpha == beta
        self.alphas.append(alpha)
        return self.lams.pop(0)

    def randrange(self, n):
        value = self.positions.pop(0)
        assert 0 <= value < n
        return value


def _ramp_image(width=16, height=16):
    """RGB image holding every value 0..255 once per channel."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    return Image.fromarray(np.stack([values] * 3, axis=-1)).resize((width, height), Image.NEAREST)


# ----- RandAugment: policy grammar -----

def test_recipe_policy_parses_to_timm_values():
    assert parse_policy("rand-m9-mstd0.5-inc1") == {"m": 9.0, "n": 2, "mstd": 0.5, "mmax": 10.0, "inc": 1, "p": 0.5}


def test_policy_defaults_and_every_key():
    assert parse_policy("rand") == {"m": 10.0, "n": 2, "mstd": 0.0, "mmax": 10.0, "inc": 0, "p": 0.5}
    assert parse_policy("rand-n3-m7-mmax8-p0.7-inc0-mstd1") == {
        "m": 7.0, "n": 3, "mstd": 1.0, "mmax": 8.0, "inc": 0, "p": 0.7}


def test_mstd_above_100_means_uniform_magnitude():
    assert parse_policy("rand-m9-mstd101")["mstd"] == math.inf
    assert parse_policy("rand-m9-mstd100")["mstd"] == 100.0


@pytest.mark.parametrize("policy", ["rand-m", "rand-x9", "randm9", "rand-m9-m8", "rand-inc2", "rand-n0", "rand-n1.5",
                                    "rand-m9-", "rand-m-9", "rand-p2", "augmix-m5", "v0", "rand-m9_mstd0.5"])
def test_malformed_policy_is_one_clear_value_error(policy):
    with pytest.raises(ValueError, match="auto_augment") as err:
        parse_policy(policy)
    assert "\n" not in str(err.value) and repr(policy) in str(err.value)


def test_off_values_give_no_transform():
    assert create_auto_augment("", "bicubic") is None
    assert create_auto_augment("none", "bicubic") is None
    assert create_auto_augment("None", "bicubic") is None
    assert isinstance(create_auto_augment("rand-m9-mstd0.5-inc1", "bicubic"), RandAugment)


def test_transform_holds_the_chosen_op_set_with_policy_values():
    ra = rand_augment_transform("rand-m9-mstd0.5-inc1", interpolation="bicubic")
    assert ra.num_layers == 2
    assert [op.name for op in ra.ops] == list(aa.RAND_INCREASING_TRANSFORMS)
    assert len(ra.ops) == 15
    assert {(op.magnitude, op.prob, op.magnitude_std, op.magnitude_max, op.fill, op.interpolation)
            for op in ra.ops} == {(9.0, 0.5, 0.5, 10.0, (124, 116, 104), "bicubic")}
    plain = rand_augment_transform("rand-m5-n4")
    assert [op.name for op in plain.ops] == list(aa.RAND_TRANSFORMS) and plain.num_layers == 4


# ----- RandAugment: magnitude sampling -----

def _magnitudes(policy, draws=20000):
    op = rand_augment_transform(policy).ops[0]
    rng = random.Random(0)
    return np.array([op.sample_magnitude(rng) for _ in range(draws)])


def test_magnitude_noise_is_gaussian_around_m_clipped_at_10():
    m = _magnitudes("rand-m9-mstd0.5")
    assert m.max() == 10.0 and m.min() > 6.5
    # N(9, 0.5) clipped at 10: P(clip) = P(z > 2) = 2.3%; mean drops by only ~0.004
    assert abs((m == 10.0).mean() - 0.0228) < 0.004
    assert abs(m.mean() - 8.996) < 0.01
    assert abs(m[m < 10].std() - 0.48) < 0.02


def test_mstd_above_100_draws_uniform_in_0_m():
    m = _magnitudes("rand-m9-mstd101")
    assert m.min() >= 0 and m.max() <= 9
    assert abs(m.mean() - 4.5) < 0.06 and abs(m.std() - 9 / math.sqrt(12)) < 0.05


def test_mmax_clips_and_no_mstd_keeps_m_fixed():
    assert _magnitudes("rand-m9-mstd2-mmax9.5").max() == 9.5
    assert set(_magnitudes("rand-m7", draws=50)) == {7.0}


# ----- RandAugment: level -> argument and op semantics -----

def _apply(name, magnitude, img, seed=0, interpolation="bilinear"):
    """Op `name` applied for sure at a fixed magnitude."""
    op = aa.AugmentOp(name, magnitude, prob=1.0, interpolation=interpolation)
    return np.asarray(op(img, random.Random(seed)))


def test_posterize_increasing_keeps_fewer_bits_at_higher_magnitude():
    img = _ramp_image()
    distinct = {m: len(np.unique(_apply("PosterizeIncreasing", m, img))) for m in (0, 5, 10)}
    assert distinct == {0: 16, 5: 4, 10: 1}  # 4, 2 and 0 bits kept
    assert _apply("PosterizeIncreasing", 10, img).max() == 0
    # the original op goes the other way: 0 bits at magnitude 0, 4 at 10
    assert {m: len(np.unique(_apply("Posterize", m, img))) for m in (0, 10)} == {0: 1, 10: 16}


def test_solarize_increasing_threshold_decreases_with_magnitude():
    img = _ramp_image()
    ramp = np.asarray(img).astype(int)
    assert [aa.OPS["SolarizeIncreasing"][1](m, None) for m in (0, 5, 10)] == [256, 128, 0]
    assert np.array_equal(_apply("SolarizeIncreasing", 0, img), ramp)  # threshold 256: nothing inverted
    assert np.array_equal(_apply("SolarizeIncreasing", 10, img), 255 - ramp)  # threshold 0: all inverted
    half = _apply("SolarizeIncreasing", 5, img)
    assert np.array_equal(half, np.where(ramp >= 128, 255 - ramp, ramp))


def test_solarize_add_adds_110_below_128_at_magnitude_10():
    ramp = np.asarray(_ramp_image()).astype(int)
    out = _apply("SolarizeAdd", 10, _ramp_image())
    assert np.array_equal(out, np.where(ramp < 128, np.minimum(ramp + 110, 255), ramp))


def test_enhance_increasing_factor_is_one_plus_or_minus_0_09_per_level():
    level_to_arg = aa.OPS["ColorIncreasing"][1]
    factors = {round(level_to_arg(9, random.Random(seed)), 6) for seed in range(40)}
    assert factors == {0.19, 1.81}
    assert level_to_arg(0, random.Random(0)) == 1.0
    assert aa.OPS["Color"][1](9, None) == pytest.approx(1.72)  # original op: 0.1 + 1.8 * level / 10
    assert level_to_arg(13, random.Random(1)) >= 0.1  # mmax > 10 must not give a negative blend


def test_rotate_shear_translate_ranges():
    rng = random.Random(0)
    assert {abs(aa.OPS["Rotate"][1](10, rng)) for _ in range(10)} == {30.0}
    assert {round(abs(aa.OPS["ShearX"][1](10, rng)), 6) for _ in range(10)} == {0.3}
    assert {round(abs(aa.OPS["TranslateYRel"][1](5, rng)), 6) for _ in range(10)} == {0.225}
    signs = {math.copysign(1, aa.OPS["Rotate"][1](4, random.Random(seed))) for seed in range(20)}
    assert signs == {-1.0, 1.0}


def test_translate_rel_moves_by_45_percent_and_fills_with_mean():
    array = np.zeros((8, 40, 3), np.uint8)
    array[:, 20] = 255  # a white column at x = 20
    img = Image.fromarray(array)
    columns = set()
    for seed in range(10):
        out = _apply("TranslateXRel", 10, img, seed, interpolation="nearest")
        white = np.flatnonzero(out[0, :, 0] == 255)
        columns.add(tuple(white))
        filled = out[0, :2] if white[0] == 38 else out[0, -2:]  # the side shifted in from outside
        assert (filled == (124, 116, 104)).all()
    assert columns == {(2,), (38,)}  # 20 -/+ 0.45 * 40


def test_rotate_corners_take_the_mean_fill():
    out = _apply("Rotate", 10, Image.new("RGB", (32, 32), (255, 255, 255)))
    assert tuple(out[0, 0]) == (124, 116, 104) and tuple(out[16, 16]) == (255, 255, 255)


def test_random_interpolation_draws_bilinear_and_bicubic():
    img = Image.fromarray(np.random.RandomState(0).randint(0, 255, (24, 24, 3), np.uint8))
    references = {name: [np.asarray(aa.rotate(img, angle, aa.FILL, aa.INTERPOLATIONS[name])) for angle in (30, -30)]
                  for name in ("bilinear", "bicubic")}
    seen = set()
    for seed in range(30):
        out = _apply("Rotate", 10, img, seed, interpolation="random")
        seen |= {name for name, refs in references.items() if any(np.array_equal(out, r) for r in refs)}
    assert seen == {"bilinear", "bicubic"}


def test_op_probability_and_layer_count():
    invert = aa.AugmentOp("Invert", 9, prob=0.5)
    img = Image.new("RGB", (2, 2), (10, 10, 10))
    rng = random.Random(0)
    applied = np.mean([np.asarray(invert(img, rng))[0, 0, 0] == 245 for _ in range(4000)])
    assert abs(applied - 0.5) < 0.03

    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __call__(self, image, _rng):
            calls.append(self.name)
            return image

    ra = RandAugment([Recorder(i) for i in range(15)], num_layers=2, rng=random.Random(0))
    for _ in range(3000):
        ra(img)
    assert len(calls) == 6000
    counts = np.bincount(calls, minlength=15)
    assert counts.min() > 320 and counts.max() < 480  # uniform, 400 each
    pairs = list(zip(calls[::2], calls[1::2]))
    assert any(a == b for a, b in pairs)  # drawn with replacement, as timm


def test_full_recipe_policy_runs_on_rgb_images():
    ra = rand_augment_transform("rand-m9-mstd0.5-inc1", "bicubic", rng=random.Random(0))
    img = Image.fromarray(np.random.RandomState(1).randint(0, 255, (32, 40, 3), np.uint8))
    for _ in range(200):
        out = ra(img)
        assert out.mode == "RGB" and out.size == (40, 32)


# ----- Mixup / CutMix -----

def _batch(values=(0, 1, 2, 3), hw=(4, 4)):
    """[B, 3, H, W] float32 where image i is constant values[i]."""
    return np.stack([np.full((3, *hw), v, np.float32) for v in values])


def test_label_smoothing_values():
    y = smoothed_one_hot(np.array([0, 2]), 4, 0.1)
    assert np.allclose(y, [[0.925, 0.025, 0.025, 0.025], [0.025, 0.025, 0.925, 0.025]])
    assert y.dtype == np.float32


def test_mixup_target_mixes_with_the_flipped_batch():
    t = mixup_target(np.array([0, 1, 2, 3]), 4, 0.7, 0.0)
    assert np.allclose(t[0], [0.7, 0, 0, 0.3]) and np.allclose(t[1], [0, 0.7, 0.3, 0])
    assert np.allclose(t.sum(1), 1)


def test_batch_mixup_by_hand():
    rng = ScriptedRng(randoms=[0.0], lams=[0.7])  # 0.0 < prob: mix
    mixup = Mixup(4, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1, rng=rng)
    images, targets = mixup(_batch(), np.array([0, 1, 2, 3]))
    assert np.allclose(images[:, 0, 0, 0], [0.9, 1.3, 1.7, 2.1])  # 0.7 x_i + 0.3 x_(3-i)
    off, on = 0.025, 0.925
    assert rng.alphas == [0.8]
    assert np.allclose(targets[0], [0.7 * on + 0.3 * off, off, off, 0.7 * off + 0.3 * on])
    assert np.allclose(targets.sum(1), 1) and targets.dtype == np.float32 and images.dtype == np.float32


def test_cutmix_box_area_corrects_lam():
    (top, bottom, left, right), lam = cutmix_box((8, 8), 0.75, ScriptedRng(positions=[4, 4]))
    assert (top, bottom, left, right) == (2, 6, 2, 6) and lam == 0.75  # 4x4 box inside
    (top, bottom, left, right), lam = cutmix_box((8, 8), 0.75, ScriptedRng(positions=[0, 7]))
    assert (top, bottom, left, right) == (0, 2, 5, 8) and lam == 1 - 6 / 64  # clipped to 2x3


def test_batch_cutmix_pastes_the_flipped_batch_and_uses_the_box_lam():
    rng = ScriptedRng(randoms=[0.0, 0.2], lams=[0.75], positions=[0, 0])  # 0.2 < switch_prob: cutmix
    mixup = Mixup(4, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, label_smoothing=0.0, rng=rng)
    images, targets = mixup(_batch(hw=(8, 8)), np.array([0, 1, 2, 3]))
    assert rng.alphas == [1.0]
    lam = 1 - 4 / 64  # box clipped to rows 0:2, cols 0:2
    for i in range(4):
        assert (images[i, :, :2, :2] == 3 - i).all()
        assert (images[i, :, 2:, :] == i).all() and (images[i, :, :, 2:] == i).all()
        assert np.allclose(targets[i, [i, 3 - i]], [lam, 1 - lam])


def test_switch_prob_above_draw_selects_mixup():
    rng = ScriptedRng(randoms=[0.0, 0.6], lams=[0.5])
    images, _ = Mixup(4, 0.8, 1.0, switch_prob=0.5, rng=rng)(_batch(), np.arange(4))
    assert rng.alphas == [0.8] and np.allclose(images[:, 0, 0, 0], 1.5)


def test_pair_mode_mixes_each_pair_both_ways():
    rng = ScriptedRng(randoms=[0.0, 0.0], lams=[0.6, 0.9])  # pair (0, 3) then pair (1, 2)
    mixup = Mixup(4, mixup_alpha=1.0, cutmix_alpha=0.0, mode="pair", label_smoothing=0.0, rng=rng)
    images, targets = mixup(_batch(), np.array([0, 1, 2, 3]))
    assert np.allclose(images[:, 0, 0, 0], [0.6 * 0 + 0.4 * 3, 0.9 * 1 + 0.1 * 2, 0.9 * 2 + 0.1 * 1, 0.6 * 3 + 0.4 * 0])
    assert np.allclose(targets[3], [0.4, 0, 0, 0.6]) and np.allclose(targets[1], [0, 0.9, 0.1, 0])


def test_pair_mode_needs_an_even_batch():
    with pytest.raises(ValueError, match="even batch size, got 3"):
        Mixup(4, mode="pair")(_batch((0, 1, 2)), np.array([0, 1, 2]))


def test_elem_mode_draws_per_sample_and_prob_skips_some():
    # sample 0: mixed (0.0 < prob), lam 0.8; sample 1: 0.9 >= prob 0.5 -> untouched; 2: lam 0.3; 3: untouched
    rng = ScriptedRng(randoms=[0.0, 0.9, 0.0, 0.7], lams=[0.8, 0.3])
    mixup = Mixup(4, mixup_alpha=1.0, cutmix_alpha=0.0, prob=0.5, mode="elem", label_smoothing=0.0, rng=rng)
    images, targets = mixup(_batch(), np.array([0, 1, 2, 3]))
    assert np.allclose(images[:, 0, 0, 0], [0.8 * 0 + 0.2 * 3, 1, 0.3 * 2 + 0.7 * 1, 3])
    assert np.allclose(targets, [[0.8, 0, 0, 0.2], [0, 1, 0, 0], [0, 0.7, 0.3, 0], [0, 0, 0, 1]])


def test_no_mixing_keeps_images_and_gives_smoothed_one_hot():
    labels = np.array([3, 1, 0, 2])
    expected = smoothed_one_hot(labels, 5, 0.1)
    for mixup, mix in ((Mixup(5, 0.8, 1.0, label_smoothing=0.1), False),  # mixup_off_epoch reached
                       (Mixup(5, 0.0, 0.0, label_smoothing=0.1), True),  # both alphas 0
                       (Mixup(5, 0.8, 1.0, prob=0.0, label_smoothing=0.1), True)):
        images, targets = mixup(_batch(), labels, mix=mix)
        assert np.array_equal(images, _batch()) and np.allclose(targets, expected)


def test_mixup_lam_follows_beta_and_input_is_untouched():
    batch = _batch((0, 1))
    mixup = Mixup(2, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0, rng=random.Random(0))
    lams = np.array([mixup(batch, np.array([0, 1]))[1][0, 0] for _ in range(5000)])
    assert np.array_equal(batch, _batch((0, 1)))
    assert abs(lams.mean() - 0.5) < 0.02 and abs(lams.var() - 0.25 / 2.6) < 0.01  # Beta(.8,.8): var 1/(4*2.6)


# ----- RandomErasing -----

def _erased(img, out):
    return np.any(out != img, axis=0)


def test_erasing_probability_zero_and_one():
    img = np.ones((3, 20, 20), np.float32)
    assert RandomErasing(0.0)(img) is img
    out = RandomErasing(1.0, rng=random.Random(0))(img)
    assert _erased(img, out).any() and (img == 1).all()  # input untouched


def test_erasing_box_statistics():
    img = np.ones((3, 100, 100), np.float32)
    eraser = RandomErasing(1.0, mode="const", rng=random.Random(0))
    areas, log_aspects = [], []
    for _ in range(2000):
        mask = _erased(img, eraser(img))
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        h, w = len(rows), len(cols)
        assert mask.sum() == h * w  # one solid rectangle
        areas.append(h * w / 1e4)
        log_aspects.append(math.log(h / w))
    areas, log_aspects = np.array(areas), np.array(log_aspects)
    assert areas.min() > 0.018 and areas.max() < 0.34
    assert abs(areas.mean() - (0.02 + 1 / 3) / 2) < 0.01  # area uniform in [0.02, 1/3]
    assert np.abs(log_aspects).max() < math.log(1 / 0.3) + 0.1  # aspect in [0.3, 3.33]
    assert abs(log_aspects.mean()) < 0.05 and abs(log_aspects.std() - 2 * math.log(1 / 0.3) / math.sqrt(12)) < 0.1


def test_erasing_fill_modes():
    img = np.full((3, 64, 64), 5.0, np.float32)
    const = RandomErasing(1.0, "const", rng=random.Random(0))(img)
    assert set(np.unique(const[:, _erased(img, const)])) == {0.0}
    rand = RandomErasing(1.0, "rand", rng=random.Random(1))(img)
    region = rand[:, _erased(img, rand)]
    assert all(len(np.unique(channel)) == 1 for channel in region)  # one value per channel
    assert len(np.unique(region[:, 0])) == 3
    pixel_values = []
    eraser = RandomErasing(1.0, "pixel", rng=random.Random(2))
    for _ in range(20):
        out = eraser(img)
        pixel_values.append(out[:, _erased(img, out)].ravel())
    pixel_values = np.concatenate(pixel_values)
    assert abs(pixel_values.mean()) < 0.02 and abs(pixel_values.std() - 1) < 0.02  # N(0, 1) per pixel


def test_erasing_count_draws_between_1_and_max_and_splits_the_area():
    counts = []

    class Counting(RandomErasing):
        def _sample_box(self, hw, count, rng):
            counts.append(count)
            return super()._sample_box(hw, count, rng)

    img = np.ones((3, 50, 50), np.float32)
    eraser = Counting(1.0, max_count=3, rng=random.Random(0))
    for _ in range(300):
        eraser(img)
    assert set(counts) == {1, 2, 3}
    # with `count` boxes each box gets 1 / count of the area fraction uniform in [0.02, 1/3]
    rng = random.Random(0)
    areas = [h * w / 1e4 for _, _, h, w in (eraser._sample_box((100, 100), 3, rng) for _ in range(2000))]
    assert abs(np.mean(areas) - (0.02 + 1 / 3) / 2 / 3) < 0.004


@pytest.mark.parametrize("kwargs", [dict(mode="random"), dict(min_count=2, max_count=1)])
def test_erasing_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="random erasing"):
        RandomErasing(0.5, **kwargs)


# ----- RandomResizedCrop (torchvision's sampler, drawing from the rng it is given) -----

def test_resized_crop_boxes_follow_scale_and_ratio_and_the_rng():
    from src.data.augment import RandomResizedCrop
    crop = RandomResizedCrop(32, scale=(0.2, 0.6), ratio=(3 / 4, 4 / 3))
    boxes = [crop.box(200, 100, random.Random(seed)) for seed in range(300)]
    for left, top, w, h in boxes:
        assert 0 <= left <= 200 - w and 0 <= top <= 100 - h
        # w, h are rounded from an area in [0.2, 0.6] x 20000 and a ratio in [3/4, 4/3]
        assert 0.2 * 20000 * 0.97 <= w * h <= 0.6 * 20000 * 1.03
        assert 3 / 4 * 0.97 <= w / h <= 4 / 3 * 1.03
    assert len(set(boxes)) > 250  # drawn, not fixed
    assert crop.box(200, 100, random.Random(7)) == boxes[7]  # a function of the rng's state only
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 200, 3), np.uint8))
    out = crop(img, random.Random(7))
    left, top, w, h = boxes[7]
    assert out.size == (32, 32)
    assert np.array_equal(np.asarray(out), np.asarray(img.crop((left, top, left + w, top + h)).resize((32, 32), Image.BILINEAR)))


def test_resized_crop_falls_back_to_the_centre_clipped_to_the_ratio():
    from src.data.augment import RandomResizedCrop
    # a 400x20 strip: no box of ratio <= 4/3 and area >= 0.5 fits in 10 tries, so the centre 27x20
    crop = RandomResizedCrop(16, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3))
    assert crop.box(400, 20, random.Random(0)) == ((400 - 27) // 2, 0, 27, 20)
    assert crop.box(20, 400, random.Random(0)) == (0, (400 - 27) // 2, 20, 27)
