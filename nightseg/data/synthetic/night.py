"""Night rendering of a street G-buffer: the same scene and label as the day image, lit by the city.

Not a global darkening. What changes, following what makes real night driving images hard
(Dai & Van Gool 2018; Sun et al. 2019, Fig. 1): almost no ambient light and a colour shift to
moonlit blue; a dark sky with orange/grey light pollution near the horizon; street lamps (sodium
orange or LED white) throwing pools of light on road, sidewalk and facades; head-light cones of
oncoming vehicles and of the ego car; glowing head, tail, traffic and window lights with lens bloom;
mirror streaks of lights on wet asphalt; high sensor gain with shot and read noise.
"""

from __future__ import annotations

import cv2
import numpy as np

from nightseg.data.synthetic.layout import Layout
from nightseg.data.synthetic.objects import Light
from nightseg.data.synthetic.scene import Z_NEAR, GBuffer, finish, sky_height

MOON = np.array([0.55, 0.7, 1.0], np.float32)  # moon/skylight is bluish (Purkinje-like look)


def _ego_lights(layout: Layout) -> list[Light]:
    """The camera car's low beams (one light for the pair), just below the camera, aimed ahead."""
    h = min(0.7, layout.camera.height - 0.4)
    return [Light((0.0, h, 0.0), (260, 250, 225), (0, -0.05, 1), np.cos(np.radians(22)), reflect=False,
                  near=12, cutoff=.25)]


def _irradiance(gb: GBuffer, lights: list[Light]) -> np.ndarray:
    """Sum of point/spot lights (inverse square, Lambert) over the image, (H, W, 3).

    Works on separate x/y/z planes (contiguous) since this loop is the night render's hot spot.
    """
    px, py, pz = (np.ascontiguousarray(gb.pos[..., i]) for i in range(3))
    nx, ny, nz = (np.ascontiguousarray(gb.normal[..., i]) for i in range(3))
    acc = np.zeros((3,) + px.shape, np.float32)
    for lt in lights:
        if not lt.illum:
            continue
        dx, dy, dz = lt.pos[0] - px, lt.pos[1] - py, lt.pos[2] - pz
        d2 = dx * dx
        d2 += dy * dy
        d2 += dz * dz
        d2 += np.float32(0.3)
        inv = 1 / np.sqrt(d2)
        k = dx * nx
        k += dy * ny
        k += dz * nz
        np.maximum(k, 0, out=k)
        k *= inv
        k /= d2  # cos(incidence) / distance^2
        if lt.dir is not None:
            cs = dx * lt.dir[0]
            cs += dy * lt.dir[1]
            cs += dz * lt.dir[2]
            cs *= -inv
            k *= np.clip((cs - lt.cos_outer) * np.float32(3 / (1 - lt.cos_outer)), 0, 1)
        if lt.near:
            k *= np.minimum(d2 * np.float32(1 / lt.near ** 2), 1)
        if lt.cutoff < 1:
            k *= np.where(dy < 0, np.float32(lt.cutoff), np.float32(1))
        for c in range(3):
            acc[c] += k * lt.rgb[c]
    return np.moveaxis(acc, 0, -1)


def _splats(gb: GBuffer, lights: list[Light], mirror: bool) -> np.ndarray:
    """Point images of visible light sources (or their mirror images in a wet road), scaled by
    inverse square distance, to be blurred into lens glare or reflection streaks."""
    h, w = gb.label.shape
    img = np.zeros((h, w, 3), np.float32)
    for lt in lights:
        p = lt.pos.copy()
        if p[2] < Z_NEAR + 0.5 or (mirror and not lt.reflect):
            continue
        if mirror:
            p[1] = -p[1]
        u, v = gb.project(p)
        iu, iv = int(u), int(v)
        if not (0 <= iu < w and 0 <= iv < h):
            continue
        if mirror:
            if not gb.ground[iv, iu]:
                continue
        elif gb.pos[iv, iu, 2] < p[2] - 1.0 and not gb.sky[iv, iu]:
            continue  # hidden behind something nearer
        img[iv, iu] += lt.rgb / max(float(p[2]) ** 2, 1.0)
    return img


def render_night(gb: GBuffer, layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """Night image of the G-buffer's scene, (H, W, 3) uint8."""
    n = layout.night
    h, w = gb.label.shape
    lights = list(layout.lights) + (_ego_lights(layout) if n["ego_lights"] else [])
    amb = MOON * np.float32(n["ambient"])
    irr = amb * ((.5 + .5 * gb.normal[..., 1]) * gb.ao)[..., None] + _irradiance(gb, lights)
    rad = gb.albedo * irr + gb.emit
    # Sky: near black overhead, light pollution glowing near the horizon, faint lit cloud texture.
    t = sky_height(gb)
    glow = np.asarray(n["skyglow"], np.float32) * 0.35
    sky = glow * np.exp(-4 * t)[..., None] + np.float32(.004) * MOON
    sky = sky * (1 + .35 * np.clip(gb.coarse, -1, 2))[..., None]
    rad = np.where(gb.sky[..., None], sky, rad)
    # Wet asphalt mirrors the lights as vertical streaks; lenses bloom around bright sources.
    if n["wetness"] > 0:
        refl = _splats(gb, lights, mirror=True)
        sx, sy = max(w / 400, .6), max(w / 40, 2)
        refl = cv2.GaussianBlur(refl, (0, 0), sigmaX=sx, sigmaY=sy) * np.float32(n["wetness"] * 60 * sx * sy)
        rad += refl * gb.ground[..., None]
        rad *= np.where(gb.ground, 1 - .4 * n["wetness"], 1.0)[..., None].astype(np.float32)
    # Only strong sources bloom (lamps, head lights); a lit window just glows on its own pixels.
    src = np.clip(gb.emit - np.float32(1.0), 0, 8)
    src += _splats(gb, lights, mirror=False) * np.float32(w * w / 2000)
    s1, s2 = max(w / 256, .7), max(w / 50, 2)
    rad += cv2.GaussianBlur(src, (0, 0), s1) * np.float32(.35)
    rad += cv2.GaussianBlur(src, (0, 0), s2) * np.float32(.12)
    return finish(rad * np.float32(n["exposure"]), rng, noise=n["noise"] * 1.6, read=n["noise"] * 0.25)
