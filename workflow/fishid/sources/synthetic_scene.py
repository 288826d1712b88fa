"""Photo-like difficulty for the synthetic source: scenes, nuisances and individual fish.

The plain (v1) pictures are too easy and too clean: every fish is big, sharp and lit in
front of an anemone. A source that sets `scenes`, `nuisances` or `individuals` draws, per
picture and deterministically from the seed:

- a scene: `anemone` (the v1 backgrounds), `dark` (a dark dive, the fish lit dimly),
  `studio_white` and `studio_black` (specimen photos like FishPix and FishBase ones, on
  paper or cloth with a gradient, noise and a drop shadow, so that they are no flat
  "non-photos"), `wide` (a small fish in a wide reef scene);
- nuisances, each with its own probability: `colour_cast` (the blue or green of deep
  water, with haze), `school` (two to four fish of the species), `occlusion` (anemone
  tentacles in front of the fish), `defocus`, `motion_blur`, `jpeg` (a low JPEG quality
  in the served bytes);
- with `individuals`, the fish itself from the species table's optional columns: its bar
  count (`bar_counts`), bar width (`bar_width_range`) and colour morph (`morphs`).

Every choice lands in the picture's params (or, for the individual, its pattern), so that
a media_url alone still renders it; a picture without the new keys is the v1 picture.
"""

from __future__ import annotations

import math
import re

import numpy as np
from PIL import Image, ImageFilter

from fishid.sources import synthetic_render as draw

SCENES = ("anemone", "dark", "studio_white", "studio_black", "wide")
NUISANCES = ("colour_cast", "school", "occlusion", "defocus", "motion_blur", "jpeg")
# Nuisances a scene never has: none underwater on a studio photo, and no hazy cast on a dark
# dive (the two together leave too few colours for the non-photo filter's few_colours).
_NOT_IN = {"studio_white": ("colour_cast", "occlusion"), "studio_black": ("colour_cast", "occlusion")} | {
    "dark": ("colour_cast",)
}
VARIATION_COLUMNS = ("bar_counts", "bar_width_range", "morphs")
PATTERN_KEYS = ("taxon", "bars", "bar_width", "bar_margin", "body_color", "fin_color", "tail_color")
_POSE_KEYS = ("angle", "scale", "cx", "cy", "flip", "bend", "depth", "fin_spread", "color_jitter")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


# --------------------------------------------------------------------------- settings


def check_realism(spec: dict) -> dict | None:
    """{individuals, scenes, nuisances} of a synthetic source's config, checked; None when it
    sets none of them (the v1 pictures). A bad value raises ValueError naming the key."""
    if not any(key in spec for key in ("individuals", "scenes", "nuisances")):
        return None
    individuals = spec.get("individuals", False)
    if not isinstance(individuals, bool):
        raise ValueError(f"sources.synthetic.individuals: {individuals!r} must be true or false")
    scenes = dict(spec.get("scenes") or {"anemone": 1})
    for name, weight in scenes.items():
        if name not in SCENES:
            raise ValueError(f"sources.synthetic.scenes: unknown scene {name!r}; known: {', '.join(SCENES)}")
        if not _is_number(weight) or weight < 0:
            raise ValueError(f"sources.synthetic.scenes.{name}: {weight!r} must be a weight >= 0")
    if sum(scenes.values()) <= 0:
        raise ValueError("sources.synthetic.scenes: give at least one scene a weight above 0")
    nuisances = dict(spec.get("nuisances") or {})
    for name, share in nuisances.items():
        if name not in NUISANCES:
            raise ValueError(f"sources.synthetic.nuisances: unknown nuisance {name!r}; known: {', '.join(NUISANCES)}")
        if not _is_number(share) or not 0 <= share <= 1:
            raise ValueError(f"sources.synthetic.nuisances.{name}: {share!r} must be a probability 0-1")
    return {"individuals": individuals, "scenes": scenes, "nuisances": nuisances}


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- the table's variation


def parse_variation(row: dict[str, str], bars: int, error) -> dict:
    """The optional columns of one species row -> {bar_counts, bar_width_range, morphs}
    (only those given); `error(column, message)` makes the ValueError."""
    variation = {}
    text = row.get("bar_counts", "")
    if text:
        counts = []
        for item in text.split(","):
            count, share = _split(item, 2, "bar_counts", "count:share, e.g. 2:0.15", error)
            if not count.isdigit() or not 0 <= int(count) <= 5:
                raise error("bar_counts", f"{count!r} is not a bar count 0-5")
            counts.append([int(count), _share(share, "bar_counts", error)])
        _check_total(counts, "bar_counts", error)
        variation["bar_counts"] = counts
    text = row.get("bar_width_range", "")
    if text:
        lo, hi = _split(text, 2, "bar_width_range", "low-high, e.g. 0.05-0.09", error, sep="-")
        try:
            lo, hi = float(lo), float(hi)
        except ValueError:
            raise error("bar_width_range", f"{text!r} is not two numbers low-high") from None
        if not (0.02 <= lo <= hi <= 0.15):
            raise error("bar_width_range", f"{text!r}: want 0.02 <= low <= high <= 0.15 (fraction of body length)")
        variation["bar_width_range"] = [lo, hi]
    text = row.get("morphs", "")
    if text:
        morphs = []
        for item in text.split(";"):
            name, share, *colors = _split(item, 5, "morphs", "name:share:#body:#fin:#tail", error)
            if not _NAME_RE.match(name):
                raise error("morphs", f"{name!r} is not a morph name (lower-case letters, digits, _)")
            for color in colors:
                if not _COLOR_RE.match(color):
                    raise error("morphs", f"{color!r} is not a colour of the form #rrggbb")
            body, fin, tail = (c.lower() for c in colors)
            morphs.append(
                {"name": name, "share": _share(share, "morphs", error), "body_color": body, "fin_color": fin}
                | {"tail_color": tail}
            )
        _check_total([[m["name"], m["share"]] for m in morphs], "morphs", error)
        variation["morphs"] = morphs
    barred = [c for c, _ in variation.get("bar_counts", [])] + [bars]
    if max(barred) > 0 and bars == 0 and "bar_width_range" not in variation:
        raise error("bar_counts", "bars without a width: give bar_width_range for a species of 0 bars")
    return variation


def _split(text, parts, column, form, error, sep=":"):
    pieces = [p.strip() for p in text.strip().split(sep)]
    if len(pieces) != parts:
        raise error(column, f"{text.strip()!r} is not of the form {form}")
    return pieces


def _share(text, column, error) -> float:
    try:
        share = float(text)
    except ValueError:
        raise error(column, f"{text!r} is not a share 0-1") from None
    if not 0 < share <= 1:
        raise error(column, f"{text!r} is not a share above 0 and at most 1")
    return share


def _check_total(items, column, error) -> None:
    total = sum(share for _, share in items)
    if total > 1 + 1e-9:
        raise error(column, f"the shares add up to {total:g}, more than 1")


def individual(pattern: dict, rng: np.random.Generator) -> dict:
    """One fish of the species: the table's pattern with its bar count, bar width and morph
    drawn from the row's variation (three draws always, so that the rest stays put)."""
    variation = pattern.get("variation", {})
    fish = {key: pattern[key] for key in PATTERN_KEYS}
    u_bars, u_width, u_morph = rng.random(3)
    fish["bars"] = _pick(variation.get("bar_counts", []), u_bars, pattern["bars"])
    if fish["bars"] == 0:
        fish["bar_width"] = 0.0
    elif "bar_width_range" in variation:
        lo, hi = variation["bar_width_range"]
        fish["bar_width"] = round(float(lo + (hi - lo) * u_width), 4)
    morphs = variation.get("morphs", [])
    name = _pick([[m["name"], m["share"]] for m in morphs], u_morph, "")
    if name:
        morph = next(m for m in morphs if m["name"] == name)
        fish.update({key: morph[key] for key in ("body_color", "fin_color", "tail_color")}, morph=name)
    return fish


def _pick(choices, u, default):
    cumulative = 0.0
    for value, share in choices:
        cumulative += share
        if u < cumulative:
            return value
    return default


# --------------------------------------------------------------------------- per-picture choices


def sample_scene(params: dict, realism: dict, rng: np.random.Generator) -> dict:
    """The v1 params of one picture with its scene and nuisances drawn (rounded, JSON-ready).

    Each choice draws from its own stream, so that changing one probability changes only
    the pictures that gain or lose that nuisance, and nothing else about them."""
    streams = [np.random.default_rng(int(s)) for s in rng.integers(2**31, size=3 + len(NUISANCES))]
    names = list(realism["scenes"])
    weights = np.array([realism["scenes"][n] for n in names], float)
    scene = names[_choose(weights, streams[0].random())]
    chance = streams[1].random(len(NUISANCES))
    has = {
        name: bool(chance[i] < realism["nuisances"].get(name, 0.0)) and name not in _NOT_IN.get(scene, ())
        for i, name in enumerate(NUISANCES)
    }
    p = {**params, "scene": scene}
    p.update(_scene_params(scene, p, streams[2]))
    makers = {
        "colour_cast": _cast,
        "school": _school,
        "occlusion": _occluder_params,
        "defocus": lambda _p, r: {"defocus": r.uniform(1.6, 3.0)},
        "motion_blur": lambda _p, r: {"motion": {"length": r.uniform(3, 8), "angle": r.uniform(0, 180)}},
        "jpeg": lambda _p, r: {"jpeg_quality": int(r.integers(35, 71))},
    }
    for i, name in enumerate(NUISANCES):
        if has[name]:
            p.update(makers[name](p, streams[3 + i]))
    return draw._rounded(p)


def _choose(weights: np.ndarray, u: float) -> int:
    cumulative = np.cumsum(weights / weights.sum())
    return int(min(np.searchsorted(cumulative, u, side="right"), len(weights) - 1))


def _scene_params(scene: str, p: dict, rng) -> dict:
    u = rng.random(12)  # a fixed number of draws per scene kind, whichever it is

    def between(i, lo, hi):
        return lo + (hi - lo) * float(u[i])

    if scene == "dark":
        return {
            # Not black: a clipped, noiseless background would read as a flat non-photo.
            "dark": {"background": between(0, 0.2, 0.4), "fish": between(1, 0.5, 0.85)},
            "noise": between(2, 5.0, 10.0),
        }
    if scene == "wide":
        # Reef or anemone behind, never open water: a small fish in a smooth gradient has too
        # few colours for a photo.
        return {
            "scale": between(0, 0.15, 0.32),
            "cx": between(1, 0.15, 0.85),
            "cy": between(2, 0.2, 0.8),
            "background": ("tentacles", "blobs", "reef")[min(2, int(u[3] * 3))],
            "noise": max(p["noise"], between(4, 3.0, 8.0)),
        }
    if scene.startswith("studio"):
        white = scene == "studio_white"
        level = between(0, 0.76, 0.88) if white else between(0, 0.06, 0.14)
        # Paper is a little warm or blue, never neutral: FishPix slides and scans are not.
        tint = [1.0 + between(1, -0.05, 0.05), 1.0 + between(2, -0.03, 0.03), 1.0 + between(3, -0.05, 0.05)]
        return {
            "studio": {
                "level": level,
                "tint": tint,
                "gradient_angle": between(4, 0, 360),
                "gradient": between(5, 0.05, 0.18),
                "vignette": between(6, 0.0, 0.15),
                # Folds of cloth, grain of paper: without them two specimens in one pose on black
                # are near duplicates to the perceptual hash.
                "texture": 0.06 if white else 0.35,
            },
            "shadow": {"dx": between(7, -0.03, 0.03), "dy": between(8, 0.02, 0.06), "strength": between(9, 0.2, 0.4)},
            "angle": between(10, -12, 12),
            "bend": p["bend"] * 0.25,
            "scale": between(11, 0.55, 0.85),
            "cx": 0.5 + (p["cx"] - 0.5) * 0.6,
            "cy": 0.5 + (p["cy"] - 0.5) * 0.6,
            "light_strength": p["light_strength"] * 0.3,
            "brightness": 0.92 + (p["brightness"] - 0.8) * 0.3,
            "tint": [1.0, 1.0, 1.0],
            "blur": p["blur"] * 0.5,
            "noise": 2.5 + p["noise"] * 0.3,
        }
    return {}


def _school(p: dict, rng) -> dict:
    n = int(rng.integers(1, 4))
    # A school fits in the frame when its fish are small; a wide scene's already are.
    main = p["scale"] * (0.45 + 0.2 * rng.random()) if p["scale"] > 0.4 else p["scale"]
    fish = []
    for i in range(3):
        u = rng.random(12)
        if i < n:
            fish.append(
                {
                    "angle": -30 + 60 * u[0],
                    "scale": main * (0.7 + 0.45 * u[1]),
                    "cx": 0.12 + 0.76 * u[2],
                    "cy": 0.15 + 0.7 * u[3],
                    "flip": bool(u[4] < 0.5),
                    "bend": -0.12 + 0.24 * u[5],
                    "depth": 0.92 + 0.16 * u[6],
                    "fin_spread": 0.8 + 0.3 * u[7],
                    "color_jitter": [0.93 + 0.14 * x for x in u[8:11]],
                }
            )
    return {"scale": main, "fish": fish}


def _cast(p: dict, rng) -> dict:
    if rng.random() < 0.65:  # blue water
        gain = [rng.uniform(0.55, 0.85), rng.uniform(0.85, 1.0), rng.uniform(0.95, 1.15)]
        haze = [rng.uniform(0.05, 0.15), rng.uniform(0.3, 0.45), rng.uniform(0.45, 0.6)]
    else:  # green coastal water
        gain = [rng.uniform(0.55, 0.8), rng.uniform(0.95, 1.1), rng.uniform(0.6, 0.85)]
        haze = [rng.uniform(0.1, 0.2), rng.uniform(0.35, 0.5), rng.uniform(0.25, 0.35)]
    return {"cast": {"gain": gain, "haze": haze, "amount": rng.uniform(0.12, 0.35)}}


def _occluder_params(p: dict, rng) -> dict:
    return {
        "occluder": {
            "seed": int(rng.integers(2**31)),
            "angle": rng.uniform(0, 360),  # from the fish towards the tentacles
            "offset": rng.uniform(0.0, 0.3),  # of the fish's length: 0 hides about half of it
            "period": rng.uniform(0.045, 0.075),  # tentacle spacing, of the image width
            "hue": int(rng.integers(len(draw._TENTACLE_HUES))),
        }
    }


def sample_photo(pattern: dict, realism: dict | None, rng_pose, rng_scene) -> tuple[dict, dict]:
    """(the fish's pattern, the picture's params): v1 when `realism` is None."""
    params = draw.sample_params(pattern, rng_pose)
    core = {key: pattern[key] for key in PATTERN_KEYS}
    if realism is None:
        return core, params
    fish = individual(pattern, rng_scene) if realism["individuals"] else core
    return fish, sample_scene(params, realism, rng_scene)


# --------------------------------------------------------------------------- drawing


def render_photo(pattern: dict, params: dict, size=(160, 120)) -> Image.Image:
    """The picture that pattern + params describe; params without a scene give the v1 one."""
    if "scene" not in params:
        return draw.render(pattern, params, size)
    width, height = int(size[0]), int(size[1])
    rng = np.random.default_rng(params["seed"])
    studio = params.get("studio")
    if studio:
        img = _studio(studio, params["background_seed"], width, height)
    else:
        img = draw._background(params["background"], params["background_seed"], width, height)
    cover = np.zeros((height, width), np.float32)
    for pose in fish_poses(params):
        rgb, alpha = draw._fish_layer(pattern, pose, width, height)
        if "shadow" in params:
            img = img * (1.0 - _shadow(alpha, params["shadow"], width, height))[..., None]
        img = img * (1.0 - alpha[..., None]) + rgb
        cover = cover + alpha - cover * alpha
    if "occluder" in params:
        rgb, alpha = _occluder(params["occluder"], params, width, height)
        img = img * (1.0 - alpha[..., None]) + rgb
        cover = cover * (1.0 - alpha)
    img = img * draw._lighting(params, width, height)[..., None] * np.asarray(params["tint"], np.float32)
    if "dark" in params:
        lo, hi = params["dark"]["background"], params["dark"]["fish"]
        img = img * (lo + (hi - lo) * cover)[..., None]
    if "cast" in params:
        cast = params["cast"]
        amount = cast["amount"]
        img = img * np.asarray(cast["gain"], np.float32) * (1 - amount) + np.asarray(cast["haze"], np.float32) * amount
    out = Image.fromarray(draw._to_uint8(img))
    blur = max(params["blur"], params.get("defocus", 0.0))
    if blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(blur))
    if "motion" in params:
        out = _motion_blur(out, params["motion"]["length"], params["motion"]["angle"])
    if params["noise"] > 0:
        noisy = np.asarray(out, np.float32) + rng.standard_normal((height, width, 3), np.float32) * params["noise"]
        out = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    return out


def fish_poses(params: dict) -> list[dict]:
    """Each fish's pose in a scene's params, in drawing order: the school first, the main fish
    last (in front). fishid.sources.synthetic_boxes reads the same list, so the boxes follow the drawing."""
    return [{key: pose[key] for key in _POSE_KEYS} for pose in [*params.get("fish", []), params]]


def _grid(width, height):
    x = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width - 0.5
    y = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height - 0.5
    return x, y


def _studio(studio: dict, seed: int, width: int, height: int) -> np.ndarray:
    """Paper or cloth behind a specimen: a gradient, a vignette and a faint texture."""
    x, y = _grid(width, height)
    a = math.radians(studio["gradient_angle"])
    along = (x * math.cos(a) + y * math.sin(a)) * 2.0
    texture = draw._smooth_field(np.random.default_rng(seed), width, height, 10) - 0.5
    shading = 1.0 + studio["gradient"] * along - studio["vignette"] * (x * x + y * y) * 2
    base = studio["level"] * (shading + studio["texture"] * texture)
    return base[..., None] * np.asarray(studio["tint"], np.float32)


def _shadow(alpha: np.ndarray, shadow: dict, width: int, height: int) -> np.ndarray:
    """A soft drop shadow: the fish's coverage shifted and blurred, as darkening 0-1."""
    dx, dy = round(shadow["dx"] * width), round(shadow["dy"] * height)
    shifted = np.zeros_like(alpha)
    ys, yd = (slice(0, height - dy), slice(dy, height)) if dy >= 0 else (slice(-dy, height), slice(0, height + dy))
    xs, xd = (slice(0, width - dx), slice(dx, width)) if dx >= 0 else (slice(-dx, width), slice(0, width + dx))
    shifted[yd, xd] = alpha[ys, xs]
    soft = Image.fromarray(draw._to_uint8(shifted)).filter(ImageFilter.GaussianBlur(max(1.0, 0.025 * width)))
    return np.asarray(soft, np.float32) / 255.0 * shadow["strength"]


def _occluder(occ: dict, fish: dict, width: int, height: int):
    """Anemone tentacles in front of the fish, growing from one side: premultiplied colour and coverage."""
    rng = np.random.default_rng(occ["seed"])
    x = np.arange(width, dtype=np.float32)[None, :] + 0.5
    y = np.arange(height, dtype=np.float32)[:, None] + 0.5
    fish_len = fish["scale"] * width
    a = math.radians(occ["angle"])
    ox = fish["cx"] * width + math.cos(a) * occ["offset"] * fish_len
    oy = fish["cy"] * height + math.sin(a) * occ["offset"] * fish_len
    depth = (x - ox) * math.cos(a) + (y - oy) * math.sin(a)  # > 0 beyond the line, towards the tentacles
    along = -(x - ox) * math.sin(a) + (y - oy) * math.cos(a)
    period = occ["period"] * width
    wave = rng.uniform(0.2, 0.6) * np.sin(2 * math.pi * depth / rng.uniform(25, 60) + rng.uniform(0, 6.3))
    across = along / period + wave
    tube = np.floor(across)
    s = 0.5 + 0.5 * np.cos(2 * math.pi * across)  # 1 on a tentacle's axis
    reach = fish_len * (0.05 + 0.3 * draw._fract(tube * 0.618 + rng.uniform(0, 1)))  # past the line
    f = depth + reach  # > 0 inside the tentacle's length
    taper = np.sqrt(np.clip(f / (0.6 * period), 0, 1))  # rounded tip
    alpha = np.clip((s - 1 + taper * 0.9) * 5, 0, 1)
    hue = draw._TENTACLE_HUES[occ["hue"]] * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    tip = np.clip(hue * 1.3 + 0.12, 0, 1)
    tipness = np.clip(1 - f / (2.5 * period), 0, 1)[..., None]
    color = (hue * (1 - tipness) + tip * tipness) * (0.45 + 0.6 * np.sqrt(s))[..., None]
    return color * alpha[..., None], alpha


def _motion_blur(image: Image.Image, length: float, angle: float) -> Image.Image:
    """The mean of shifted copies along a line: a camera or fish moving during the exposure."""
    pixels = np.asarray(image, np.float32)
    height, width = pixels.shape[:2]
    steps = max(2, round(length))
    a = math.radians(angle)
    reach = int(math.ceil(length / 2)) + 1
    padded = np.pad(pixels, ((reach, reach), (reach, reach), (0, 0)), mode="edge")
    total = np.zeros_like(pixels)
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, steps):
        dx, dy = round(t * math.cos(a)), round(t * math.sin(a))
        total += padded[reach + dy : reach + dy + height, reach + dx : reach + dx + width]
    return Image.fromarray(np.clip(total / steps + 0.5, 0, 255).astype(np.uint8))
