"""Daylight rendering of a street G-buffer (``scene``): the domain the segmenter trains on.

A sun with Lambert shading and cast shadows on the road (each caster's top outline projected along
the sun), blue-sky ambient light, overcast days without shadows, aerial haze towards the horizon
colour, a sky gradient with clouds, auto exposure and mild sensor noise.
"""

from __future__ import annotations

import cv2
import numpy as np

from nightseg.data.synthetic.layout import Layout
from nightseg.data.synthetic.objects import lin
from nightseg.data.synthetic.scene import Z_NEAR, GBuffer, finish, sky_height


def _shadow_map(layout: Layout, gb: GBuffer, sun: np.ndarray) -> np.ndarray:
    """1 where the road plane sees the sun, 0 in the cast shadow of a caster (buildings, cars,
    poles, trees): each caster's top outline projected along the sun onto the ground."""
    h, w = gb.label.shape
    lit = np.ones((h, w), np.float32)
    shift = -sun[[0, 2]] / max(sun[1], 0.15)  # ground offset per metre of height
    for c in layout.casters:
        if c[0] == "box":
            _, x0, x1, z0, z1, ht = c
            base = np.array([(x0, z0), (x1, z0), (x1, z1), (x0, z1)])
            pts = np.vstack([base, base + ht * shift])
        else:
            _, x, z, r, y = c
            t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
            pts = np.column_stack([x + r * np.cos(t), z + r * np.sin(t)]) + y * shift
        pts = pts[pts[:, 1] > Z_NEAR + .1]
        if len(pts) < 3:
            continue
        uu, vv = gb.project(np.column_stack([pts[:, 0], np.zeros(len(pts)), pts[:, 1]]))
        hull = cv2.convexHull(np.round(np.column_stack([uu, vv]) * 8).astype(np.int32))
        cv2.fillConvexPoly(lit, hull, 0.0, shift=3)
    return lit


def render_day(gb: GBuffer, layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """Daylight: sun (Lambert, cast shadows on the road) plus sky ambient, aerial haze, a blue
    sky with clouds, auto exposure and mild sensor noise. Returns (H, W, 3) uint8."""
    d = layout.day
    el, az = d["sun_elevation"], d["sun_azimuth"]
    sun = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], np.float32)
    zenith = np.asarray(d["zenith"], np.float32)
    horizon_rgb = np.float32(.55) * zenith + np.float32(.45) * np.array(lin((225, 225, 225)), np.float32)
    sun_rgb = np.array([1.0, .93, .82], np.float32) * (0.35 if d["overcast"] else 3.0)
    amb = (horizon_rgb * 0.6 + zenith * 0.4) * (1.1 if d["overcast"] else 0.6)
    ndl = np.clip(gb.normal @ sun, 0, None)
    shade = _shadow_map(layout, gb, sun) if not d["overcast"] else 1.0
    shadow = np.where(gb.ground, shade, 1.0)
    irr = amb * ((.6 + .4 * gb.normal[..., 1]) * gb.ao)[..., None] + sun_rgb * (ndl * shadow)[..., None]
    rad = gb.albedo * irr + gb.glass[..., None] * np.float32(.1) * horizon_rgb
    h, w = gb.label.shape
    t = sky_height(gb)
    sky = horizon_rgb + (zenith - horizon_rgb) * (t ** .6)[..., None]
    cloud = np.clip((gb.coarse - 1.4 + 2 * d["clouds"]) * .8, 0, 1)[..., None] * (t > 0.03)[..., None]
    sky = sky * (1 - cloud) + cloud * np.array(lin((235, 235, 238)), np.float32)
    haze = np.exp(-gb.pos[..., 2] / d["haze"])[..., None]
    rad = np.where(gb.sky[..., None], sky, rad * haze + horizon_rgb * (1 - haze))
    return finish(rad * np.float32(d["exposure"]), rng, noise=0.006)
