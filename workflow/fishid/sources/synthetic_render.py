"""Drawing one synthetic clownfish photo from its species pattern and per-image parameters.

The plain (v1) picture: a clownfish in front of an anemone-like background, lit, tinted,
blurred and noised. Drawing is vectorised numpy: every pixel of a 2x supersampled grid is
mapped into fish-local coordinates (u along the body in body lengths, snout at u=+0.5; v
upwards), where the fish's parts are simple inequalities. fishid.sources.synthetic_scene
builds the photo-like scenes on these pieces; a picture is fully described by pattern,
params and size, which a `synthetic:` media_url carries (encode_url, decode_url).
"""

from __future__ import annotations

import json
import math

import numpy as np
from PIL import Image, ImageFilter

URL_PREFIX = "synthetic:"
BACKGROUNDS = ("tentacles", "blobs", "water", "reef")
MAX_SIDE = 2048  # pixels; a larger synthetic image is refused (its drawing needs ~MAX_SIDE**2 * 50 bytes)

_SUPERSAMPLE = 2

# Fish geometry, in body lengths (u in [-0.5, 0.5] is the body, the tail extends behind).
_MAX_HALF_HEIGHT = 0.23  # half of the body depth
_WIDEST_AT = 0.58  # fraction of body length (from the tail stalk) where the body is deepest
_STALK = 0.38  # tail-stalk depth relative to the deepest point
_TAIL_LENGTH = 0.24
_HEAD_BAR_AT = 0.76  # first bar position (fraction from tail stalk), just behind the eye
_LAST_BAR_AT = 0.07  # tail-stalk bar
_EYE = (0.36, 0.07, 0.042)  # u, v, radius

_WHITE = np.array([0.96, 0.96, 0.94], np.float32)
_BLACK = np.array([0.05, 0.04, 0.04], np.float32)

# Anemone / reef hues (RGB 0-1); deliberately few oranges so the fish stays the orange thing.
_TENTACLE_HUES = np.array(
    [
        [0.55, 0.68, 0.30],  # green
        [0.62, 0.40, 0.62],  # purple
        [0.86, 0.80, 0.62],  # beige
        [0.80, 0.62, 0.66],  # pink
        [0.50, 0.45, 0.30],  # olive brown
        [0.40, 0.62, 0.55],  # teal
    ],
    np.float32,
)
_REEF_HUES = np.array(
    [
        [0.35, 0.40, 0.30],
        [0.45, 0.38, 0.42],
        [0.55, 0.52, 0.45],
        [0.25, 0.35, 0.40],
        [0.50, 0.55, 0.35],
    ],
    np.float32,
)


# --------------------------------------------------------------------------- params


def sample_params(pattern: dict, rng: np.random.Generator) -> dict:
    """Draw the per-image variation for one picture (JSON-serialisable, rounded floats)."""
    scale = rng.uniform(0.5, 0.9)  # whole fish length, fraction of image width
    # Keep the fish mostly inside the frame: the centre may wander less for big fish.
    cx = 0.5 + rng.uniform(-1, 1) * (max(0.0, 0.5 - 0.5 * scale) + 0.03)
    cy = 0.5 + rng.uniform(-1, 1) * (max(0.0, 0.5 - 0.48 * scale) + 0.03)
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    params = {
        "angle": rng.uniform(-25, 25),
        "scale": scale,
        "cx": cx,
        "cy": cy,
        "flip": bool(rng.random() < 0.5),
        "bend": rng.uniform(-0.12, 0.12),  # swimming curvature of the body axis
        "depth": rng.uniform(0.92, 1.08),  # individual body depth
        "fin_spread": rng.uniform(0.8, 1.1),
        "background": background,
        "background_seed": int(rng.integers(2**31)),
        "light_angle": rng.uniform(0, 360),
        "light_strength": rng.uniform(0.0, 0.35),
        "brightness": rng.uniform(0.8, 1.12),
        "tint": [rng.uniform(0.88, 1.04), rng.uniform(0.96, 1.04), rng.uniform(0.96, 1.1)],  # water colour cast
        "color_jitter": [rng.uniform(0.93, 1.07) for _ in range(3)],  # per-fish RGB gain
        "blur": rng.uniform(0.0, 1.5),
        "noise": rng.uniform(0.0, 8.0),
        "seed": int(rng.integers(2**31)),
    }
    return _rounded(params)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- render


def render(pattern: dict, params: dict, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """Deterministic RGB image from pattern + params (same inputs -> identical pixels)."""
    width, height = int(size[0]), int(size[1])
    rng = np.random.default_rng(params["seed"])
    img = _background(params["background"], params["background_seed"], width, height)
    fish_rgb, fish_alpha = _fish_layer(pattern, params, width, height)
    img = img * (1.0 - fish_alpha[..., None]) + fish_rgb  # fish_rgb is premultiplied
    img = img * _lighting(params, width, height)[..., None] * np.asarray(params["tint"], np.float32)
    out = Image.fromarray(_to_uint8(img))
    if params["blur"] > 0:
        out = out.filter(ImageFilter.GaussianBlur(params["blur"]))
    if params["noise"] > 0:
        noisy = np.asarray(out, np.float32) + rng.standard_normal((height, width, 3), np.float32) * params["noise"]
        out = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    return out


def _to_uint8(img01: np.ndarray) -> np.ndarray:
    return np.clip(img01 * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _hex(color: str) -> np.ndarray:
    return np.array([int(color[i : i + 2], 16) / 255.0 for i in (1, 3, 5)], np.float32)


def _lighting(params, width, height) -> np.ndarray:
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    a = math.radians(params["light_angle"])
    along = ((x / width - 0.5) * math.cos(a) + (y / height - 0.5) * math.sin(a)) * 2.0
    return params["brightness"] * (1.0 + params["light_strength"] * along)


def _smooth_field(rng, width, height, cells) -> np.ndarray:
    """Smooth random field in [0, 1]: a coarse random grid upsampled bicubically."""
    gw = max(2, int(cells))
    gh = max(2, round(cells * height / width))
    coarse = Image.fromarray(rng.random((gh, gw), dtype=np.float32), mode="F")
    field = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), np.float32)
    lo, hi = field.min(), field.max()
    return (field - lo) / (hi - lo + 1e-6)


def _background(kind: str, seed: int, width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    if kind == "water":
        top = np.array([0.25, 0.55, 0.75], np.float32) * rng.uniform(0.8, 1.15, 3).astype(np.float32)
        bottom = np.array([0.05, 0.20, 0.40], np.float32) * rng.uniform(0.7, 1.2, 3).astype(np.float32)
        t = (y / height)[..., None]
        haze = _smooth_field(rng, width, height, rng.uniform(2, 5))[..., None]
        return top * (1 - t) + bottom * t + (haze - 0.5) * 0.08
    if kind == "blobs":
        hues = _REEF_HUES[rng.choice(len(_REEF_HUES), 3, replace=False)]
        f1 = _smooth_field(rng, width, height, rng.uniform(4, 10))[..., None]
        f2 = _smooth_field(rng, width, height, rng.uniform(8, 20))[..., None]
        img = hues[0] * (1 - f1) + hues[1] * f1
        return img * (0.75 + 0.5 * f2) + (hues[2] - img) * (f2 > 0.7) * 0.5
    if kind == "reef":  # water above a bed of tentacles
        img = _background("water", seed + 1, width, height)
        tent = _tentacles(rng, x, y, width, height)
        horizon = height * rng.uniform(0.25, 0.6) + rng.uniform(-0.15, 0.15) * (x - width / 2)
        edge = horizon + 6 * np.sin(x / rng.uniform(3, 8))  # ragged tentacle tips
        m = np.clip((y - edge) / 3.0, 0, 1)[..., None]
        return img * (1 - m) + tent * m
    if kind == "tentacles":
        return _tentacles(rng, x, y, width, height)
    raise ValueError(f"unknown synthetic background kind {kind!r}; known: {list(BACKGROUNDS)}")


def _fract(a: np.ndarray) -> np.ndarray:
    return a - np.floor(a)  # np.mod is ~50x slower on float32


def _tentacles(rng, x, y, width, height) -> np.ndarray:
    """Anemone tentacles: two layers of wavy, finger-like tubes with rounded, paler tips."""
    hue = _TENTACLE_HUES[rng.integers(len(_TENTACLE_HUES))] * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    tip = np.clip(hue * 1.3 + 0.12, 0, 1)
    img = np.broadcast_to(hue * rng.uniform(0.12, 0.3), (height, width, 3))
    base_angle = rng.uniform(0, math.pi)
    for layer in range(2):
        theta = base_angle + rng.uniform(-0.4, 0.4)
        period = rng.uniform(7, 14)
        length = rng.uniform(30, 80)  # tentacle length in pixels
        p = x * math.cos(theta) + y * math.sin(theta)
        q = -x * math.sin(theta) + y * math.cos(theta)
        wave = rng.uniform(0.5, 1.8) * np.sin(2 * math.pi * q / rng.uniform(30, 80) + rng.uniform(0, 6.3))
        across = p / period + wave / (2 * math.pi) + layer * 0.5
        tube_id = np.floor(across)
        s = 0.5 + 0.5 * np.cos(2 * math.pi * across)  # 1 on a tube's axis
        # Each tube starts at its own offset along its axis; f runs 0 -> 1 base -> tip.
        f = _fract(q / length + _fract(tube_id * 0.618))
        taper = np.sqrt(np.clip((0.92 - f) / 0.1, 0, 1))  # rounded tip
        cover = np.clip((s - 1 + taper * (0.75 if layer else 1.0)) * 5, 0, 1)[..., None]
        tipness = np.clip((f - 0.6) / 0.3, 0, 1)[..., None]
        color = (hue * (1 - tipness) + tip * tipness) * (0.4 + 0.65 * np.sqrt(s))[..., None]
        img = img * (1 - cover) + color * cover
    return img


# --------------------------------------------------------------------------- fish


def _fish_layer(pattern: dict, params: dict, width: int, height: int):
    """Premultiplied fish colour and coverage at image resolution (drawn 2x supersampled)."""
    ss = _SUPERSAMPLE
    rgb = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width), np.float32)
    grid = fish_grid(params, width, height, ss)
    if grid is None:
        return rgb, alpha
    u, v, (x0, x1, y0, y1) = grid
    part, shade = _draw_fish(u, v, pattern, params)
    palette = _palette(pattern, params)
    big_rgb = np.take(palette, part, axis=0) * shade[..., None]  # palette[0] is black, so this is premultiplied
    big_alpha = (part > 0).astype(np.float32)

    rgb[y0:y1, x0:x1] = _downsample(big_rgb, ss)
    alpha[y0:y1, x0:x1] = _downsample(big_alpha, ss)
    return rgb, alpha


def fish_grid(params: dict, width: int, height: int, ss: int):
    """Fish coordinates (u, v) of the fish's bounding box sampled ss times per pixel, and the
    box (x0, x1, y0, y1) in image pixels; None when the fish is outside the image."""
    fish_len_px = params["scale"] * width
    body_len = fish_len_px / (1 + _TAIL_LENGTH)  # pixels per body length
    cx, cy = params["cx"] * width, params["cy"] * height
    a = math.radians(params["angle"])
    cos_a, sin_a = math.cos(a), math.sin(a)
    flip = -1.0 if params["flip"] else 1.0

    # Only the fish's bounding box needs the expensive per-pixel work.
    reach = 0.5 * fish_len_px + 0.05 * body_len
    tall = 0.42 * body_len
    half_w = abs(cos_a) * reach + abs(sin_a) * tall
    half_h = abs(sin_a) * reach + abs(cos_a) * tall
    x0, x1 = max(0, int(cx - half_w) - 1), min(width, int(cx + half_w) + 2)
    y0, y1 = max(0, int(cy - half_h) - 1), min(height, int(cy + half_h) + 2)
    if x1 <= x0 or y1 <= y0:
        return None

    ys = (np.arange(y0 * ss, y1 * ss, dtype=np.float32) + 0.5) / ss
    xs = (np.arange(x0 * ss, x1 * ss, dtype=np.float32) + 0.5) / ss
    dx = xs[None, :] - cx
    dy = cy - ys[:, None]  # image y grows downwards, fish v upwards
    # Rotate into the fish frame. The fish spans u in [-0.5 - tail, 0.5]; its mid-length
    # (u = -tail / 2) sits at (cx, cy).
    u = flip * (dx * cos_a + dy * sin_a) / body_len - _TAIL_LENGTH / 2
    v = (-dx * sin_a + dy * cos_a) / body_len
    v = v - params["bend"] * u * u  # curved body axis
    return u, v, (x0, x1, y0, y1)


def _downsample(a: np.ndarray, ss: int) -> np.ndarray:
    """Box-filter an ss-times supersampled array (strided sums beat reshape().mean())."""
    out = a[0::ss, 0::ss].copy()
    for i in range(ss):
        for j in range(ss):
            if i or j:
                out += a[i::ss, j::ss]
    return out * (1.0 / (ss * ss))


def _half_height(t: np.ndarray, depth: float) -> np.ndarray:
    """Body half-depth at t (0 = tail stalk, 1 = snout): rounded head, tapering rear."""
    hmax = _MAX_HALF_HEIGHT * depth
    m = _WIDEST_AT
    front = hmax * np.sqrt(np.clip(1 - ((t - m) / (1 - m)) ** 2, 0, 1))
    rear = hmax * (_STALK + (1 - _STALK) * (1 - ((m - t) / m) ** 2))
    h = np.where(t >= m, front, rear)
    return np.where((t < 0) | (t > 1), 0.0, h)


def _bump(t, start, end):
    """Rounded bump, 0 outside [start, end], 1 in the middle."""
    x = np.clip((t - start) / (end - start), 0, 1)
    return np.sqrt(np.clip(4 * x * (1 - x), 0, 1))


def _ellipse(u, v, cu, cv, ru, rv, angle_deg):
    a = math.radians(angle_deg)
    du, dv = u - cu, v - cv
    pu = du * math.cos(a) + dv * math.sin(a)
    pv = -du * math.sin(a) + dv * math.cos(a)
    return (pu / ru) ** 2 + (pv / rv) ** 2 <= 1.0


def bar_positions(bars: int) -> list[float]:
    """Bar centres as fractions of body length from the tail stalk, head bar first."""
    if bars == 0:
        return []
    if bars == 1:
        return [_HEAD_BAR_AT]
    if bars == 2:
        return [_HEAD_BAR_AT, 0.44]
    return list(np.linspace(_HEAD_BAR_AT, _LAST_BAR_AT, bars))


# Palette slots: each fish pixel is palette[part] * shade (0 = no fish).
_NONE, _TAIL, _FIN, _BODY, _BAR, _MARGIN, _PECTORAL, _IRIS, _PUPIL = range(9)


def _palette(pattern: dict, params: dict) -> np.ndarray:
    jitter = np.asarray(params["color_jitter"], np.float32)
    body, fin, tail = (_hex(pattern[k]) * jitter for k in ("body_color", "fin_color", "tail_color"))
    iris = np.array([0.85, 0.6, 0.2], np.float32) * 0.5 + body * 0.3
    return np.stack([np.zeros(3, np.float32), tail, fin, body, _WHITE, _BLACK, fin * 0.85 + body * 0.15, iris, _BLACK])


def _draw_fish(u, v, pattern, params):
    """Painter's algorithm in fish coordinates -> (palette index, shade) per pixel.

    Order: tail and unpaired fins, body with bars, paired fins, eye.
    """
    depth, spread = params["depth"], params["fin_spread"]
    t = u + 0.5
    av = np.abs(v)
    h = _half_height(t, depth)
    part = np.zeros(u.shape, np.uint8)
    shade = np.ones(u.shape, np.float32)

    def paint(mask, index, value):
        np.copyto(part, index, where=mask)
        np.copyto(shade, value, where=mask)

    # Caudal fin: a fan behind the tail stalk with a rounded, slightly notched edge.
    d = -t
    stalk_h = _MAX_HALF_HEIGHT * depth * _STALK
    vn = av / (stalk_h * 0.8 + 0.6 * spread * _TAIL_LENGTH)
    tail = (d > -0.02) & (av < stalk_h * 0.8 + 0.6 * spread * d) & (d < _TAIL_LENGTH * (0.8 + 0.35 * vn - 0.15 * vn**4))
    paint(tail, _TAIL, 1.0 - 0.25 * np.clip(d / _TAIL_LENGTH, 0, 1))

    # Dorsal (spiny + soft part) and anal fins, behind the body.
    fin_h = np.where(v > 0, 0.07 * _bump(t, 0.4, 0.8) + 0.11 * _bump(t, 0.08, 0.48), 0.11 * _bump(t, 0.08, 0.42))
    beyond = av - h  # > 0 outside the body outline
    fins = (beyond < fin_h * spread) & (fin_h > 0.005)
    paint(fins, _FIN, 1.0 - 0.3 * np.clip(beyond / 0.12, 0, 1))  # darker toward the fin edge

    # Body with rounded shading, and vertical white bars with black margins.
    body = av < h
    rel = np.clip(v / np.maximum(h, 1e-3), -1, 1)
    body_shade = 1.08 - 0.38 * rel * rel - 0.1 * rel
    paint(body, _BODY, body_shade)
    hw, margin = pattern["bar_width"] / 2, pattern["bar_margin"]
    for tb in bar_positions(pattern["bars"]):
        # Bars bow backwards a little in the middle, like the real head bar along the gill cover.
        dist = np.abs(t - (tb - 0.025 * (1 - rel * rel)))
        paint(body & (dist < hw + margin), _MARGIN, 1.0)
        paint(body & (dist < hw), _BAR, 0.55 + 0.45 * body_shade)

    # Paired fins in front of the body: pelvic below the belly, pectoral behind the gill cover.
    belly = -_MAX_HALF_HEIGHT * depth
    pelvic = _ellipse(u, v, 0.06, belly + 0.005, 0.085, 0.032, 35)
    paint(pelvic & (~body | (v < -0.6 * h)), _FIN, 0.92)
    paint(_ellipse(u, v, 0.14, -0.03, 0.075, 0.035, -25), _PECTORAL, 1.0)

    # Eye: golden iris ring, black pupil, small highlight.
    eu, ev, er = _EYE
    ev *= depth
    r2 = (u - eu) ** 2 + (v - ev) ** 2
    paint(r2 < er**2, _IRIS, 1.0)
    paint(r2 < (er * 0.62) ** 2, _PUPIL, 1.0)
    paint((u - eu - er * 0.25) ** 2 + (v - ev - er * 0.25) ** 2 < (er * 0.2) ** 2, _BAR, 1.0)
    return part, shade


def encode_url(pattern: dict, params: dict, size=(160, 120)) -> str:
    payload = {"pattern": pattern, "params": params, "size": [int(size[0]), int(size[1])]}
    return URL_PREFIX + json.dumps(payload, sort_keys=True, separators=(",", ":"))


def decode_url(media_url: str) -> tuple[dict, dict, tuple[int, int]]:
    if not media_url.startswith(URL_PREFIX):
        raise ValueError(f"not a synthetic media_url (must start with {URL_PREFIX!r}): {media_url[:80]!r}")
    try:
        payload = json.loads(media_url[len(URL_PREFIX) :])
        pattern, params, size = payload["pattern"], payload["params"], payload["size"]
        size = (int(size[0]), int(size[1]))
        if not isinstance(pattern, dict) or not isinstance(params, dict):
            raise TypeError("pattern and params must be objects")
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"malformed synthetic media_url ({exc}): {media_url[:80]!r}") from None
    check_size(size, f"synthetic media_url {media_url[:80]!r}")
    return pattern, params, size


def check_size(size, what: str) -> None:
    """Refuse an image size outside 1-MAX_SIDE pixels a side (drawing one costs memory)."""
    if not all(1 <= side <= MAX_SIDE for side in size):
        raise ValueError(f"{what}: image size {list(size)} is outside 1-{MAX_SIDE} pixels a side")
