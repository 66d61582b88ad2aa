"""The clothes of a painted pedestrian: torso garments (their patterns, collars, openings and logos), sleeves
and bare arms, trousers, jeans, shorts and bare legs, skirts and shoes.
A mixin of :class:`ppreid.synth.render.person.PersonPainter`, which holds the geometry it reads (``cx``,
``y0``, ``shoulder_y``, ``waist_y``, ``hip_y``, ``ankle_y``, ``sw``, ``hw``, ``arm_w``, ``thigh_w``,
``ankle_w``, ``f``, ``P``, ``L``, ``pose``, ``img``, ``d``, ``k``, ``c``) and calls these in painting order."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from ppreid.synth.render.draw import Draw
from ppreid.synth.render.draw import lerp as _lerp
from ppreid.synth.render.draw import limb as _limb
from ppreid.synth.render.tables import RGB, luminance


class ClothesPainter:
    """Garment, leg, shoe, skirt, torso and arm drawing for ``PersonPainter``."""

    # ---- garments with patterns ---------------------------------------------------------------------
    def garment(self, draw_fn: Callable[[Draw, int], None], base: RGB, pattern: str, shade: float = 1.0) -> None:
        """Draw a mask with ``draw_fn`` and fill it with ``base`` (+ the pattern in the person's frame)."""
        if pattern not in ("striped", "checked", "dotted"):
            draw_fn(self.d, self.c(base, shade))
            return
        mask = Image.new("L", self.img.size, 0)
        draw_fn(Draw(mask), 255)
        bbox = mask.getbbox()
        if bbox is None:
            return
        x0, y0, x1, y1 = bbox
        u = (np.arange(x0, x1, dtype=np.float32)[None, :] - self.cx) / self.P
        v = (np.arange(y0, y1, dtype=np.float32)[:, None] - self.y0) / self.P
        per, duty = self.L.period, self.L.duty
        if pattern == "striped":
            t = np.broadcast_to(((v / per) % 1.0) < duty, (y1 - y0, x1 - x0)).astype(np.float32)
        elif pattern == "checked":
            t = 0.5 * ((((v / per) % 1.0) < duty).astype(np.float32) + (((u / per) % 1.0) < duty))
        else:
            q = per * 0.9
            row = np.floor(v / q)
            t = (((u / q + 0.5 * (row % 2)) % 1.0 - 0.5) ** 2 + ((v / q) % 1.0 - 0.5) ** 2 < 0.06).astype(np.float32)
        b = np.asarray(base, np.float32) * shade * self.k
        p = np.asarray(self.L.pattern, np.float32) * shade * self.k
        tex = b * (1 - t[..., None]) + p * t[..., None]
        self.img.paste(Image.fromarray(np.clip(tex, 0, 255).astype(np.uint8)), (x0, y0), mask.crop(bbox))

    def _leg(self, leg) -> None:
        hip, knee, ankle, shade = leg
        t, lw = self.L.words["lower_type"], self.thigh_w
        skin = self.c(self.L.skin, shade)
        if t in ("shorts", "skirt", "long_skirt"):
            _limb(self.d, hip, knee, lw * 0.8, self.ankle_w * 1.25, skin)
            _limb(self.d, knee, ankle, self.ankle_w * 1.25, self.ankle_w, skin)
        if t in ("trousers", "jeans"):
            end_w = self.ankle_w * (1.35 if t == "trousers" else 1.15)
            fill = self.c(self.L.lower, shade)
            _limb(self.d, hip, knee, lw, lw * 0.8, fill)
            _limb(self.d, knee, ankle, lw * 0.8, end_w, fill)
            if t == "jeans":
                seam = self.c(self.L.lower, shade * 1.25)
                off = (knee[0] - hip[0]) * 0.0 + lw * 0.28 * (1 if hip[0] >= self.cx else -1)
                self.d.line(
                    [
                        (hip[0] + off, hip[1] + lw * 0.4),
                        (knee[0] + off * 0.8, knee[1]),
                        (ankle[0] + off * 0.6, ankle[1] - lw * 0.3),
                    ],
                    fill=seam,
                    width=max(1, int(lw * 0.12)),
                )
        elif t == "shorts":
            _limb(self.d, hip, _lerp(hip, knee, 0.75), lw * 1.05, lw * 0.95, self.c(self.L.lower, shade))
        self._shoe(ankle, shade)

    def _shoe(self, ankle, shade: float) -> None:
        """A shoe ~0.055 P tall (6 px at 128x64) in its colour; boots add a shaft up the shin (0.13 P)."""
        P, st = self.P, self.L.shoe_style
        x, y = ankle
        fill = self.c(self.L.shoe, shade)
        if st == "boots":
            _limb(self.d, (x, y - 0.13 * P), (x, y), self.ankle_w * 1.5, self.ankle_w * 1.5, fill)
        if st == "sandals":
            fill_foot = self.c(self.L.skin, shade)
        else:
            fill_foot = fill
        h = 0.055 * P
        if self.f:
            box = [x - self.f * 0.035 * P, y - h * 0.45, x + self.f * 0.085 * P, y + h * 0.8]
            box = [min(box[0], box[2]), box[1], max(box[0], box[2]), box[3]]
        else:
            box = [x - 0.038 * P, y - h * 0.5, x + 0.038 * P, y + h * 0.8]
        self.shoe_boxes.append(tuple(box))
        self.d.rounded_rectangle(box, radius=h * 0.35, fill=fill_foot)
        sole_h = max(1.0, h * 0.28)
        if st == "sneakers":
            sole = (235, 235, 232) if luminance(self.L.shoe) < 180 else (120, 120, 120)
            self.d.rectangle([box[0], box[3] - sole_h, box[2], box[3]], fill=self.c(sole, shade))
        elif st == "sandals":
            for t in (0.3, 0.7):
                yy = box[1] + (box[3] - box[1]) * t
                self.d.line([(box[0], yy), (box[2], yy)], fill=fill, width=max(1, int(sole_h)))
        elif st == "dress":
            self.d.rectangle(
                [
                    box[0] + (box[2] - box[0]) * 0.3,
                    box[1] + h * 0.1,
                    box[0] + (box[2] - box[0]) * 0.5,
                    box[1] + h * 0.3,
                ],
                fill=self.c(self.L.shoe, shade * 2.2),
            )

    def _skirt(self, legs) -> None:
        t = self.L.words["lower_type"]
        if t not in ("skirt", "long_skirt"):
            return
        P = self.P
        half = self.L.hip * P * (0.55 if self.f else 1.0) * 1.04
        top = self.hip_y - 0.06 * P
        bottom = legs[-1][1][1] + 0.03 * P if t == "skirt" else self.ankle_y - 0.035 * P
        flare = 1.35 if t == "skirt" else 1.55
        sway = self.f * self.pose.stride * 0.03 * P
        self.d.polygon(
            [
                (self.cx - half, top),
                (self.cx + half, top),
                (self.cx + half * flare + sway, bottom),
                (self.cx - half * flare + sway, bottom),
            ],
            fill=self.c(self.L.lower),
        )

    def _torso_poly(self) -> list[tuple[float, float]]:
        P, cx, f, L = self.P, self.cx, self.f, self.L
        t = L.words["upper_type"]
        hem = self.hip_y + (0.2 * P if t == "coat" else 0.02 * P)
        sy, wy = self.shoulder_y, self.waist_y
        if f == 0:
            sw, ww = L.shoulder * P, L.waist * P
            hw = L.hip * P * (1.18 if t == "coat" else 1.02)
            neck = self.hw * 0.3
            return [
                (cx - neck, sy - 0.012 * P),
                (cx + neck, sy - 0.012 * P),
                (cx + sw, sy + 0.005 * P),
                (cx + sw * 0.97, sy + 0.06 * P),
                (cx + ww, wy),
                (cx + hw, hem),
                (cx - hw, hem),
                (cx - ww, wy),
                (cx - sw * 0.97, sy + 0.06 * P),
                (cx - sw, sy + 0.005 * P),
            ]
        d = self.sw * (1.18 if L.words["build"] == "heavy" else 1.0)
        dh = d * (1.25 if t == "coat" else 1.0)
        return [
            (cx - f * d * 0.8, sy - 0.01 * P),
            (cx + f * d * 0.7, sy - 0.01 * P),
            (cx + f * d * 1.02, sy + 0.08 * P),
            (cx + f * d * 0.9, wy),
            (cx + f * dh, hem),
            (cx - f * dh, hem),
            (cx - f * d * 0.9, wy),
            (cx - f * d, sy + 0.07 * P),
        ]

    def _torso(self) -> None:
        L, P, cx, view = self.L, self.P, self.cx, self.pose.view
        t, pat = L.words["upper_type"], L.words["upper_pattern"]
        poly = self._torso_poly()
        if t == "tank_top" and self.f == 0:
            sw = L.shoulder * P
            self.d.ellipse(
                [cx - sw, self.shoulder_y - 0.005 * P, cx + sw, self.shoulder_y + 0.08 * P], fill=self.c(L.skin)
            )
            poly = [(x * 0.75 + cx * 0.25, y) if y < self.shoulder_y + 0.07 * P else (x, y) for x, y in poly]
        self.garment(lambda dr, fill: dr.polygon(poly, fill=fill), L.upper, pat)
        ymid = (self.shoulder_y + self.hip_y) / 2
        dark = self.c(L.upper, 0.7)
        if pat == "logo" and view in ("front", "back"):  # a back print too: the word holds for every view
            s = 0.055 * P * L.logo_scale * (0.7 if view == "back" else 1.0)
            lx, ly = cx, self.shoulder_y + 0.09 * P
            box = [lx - s, ly - s, lx + s, ly + s]
            fill = self.c(L.pattern)
            if L.logo_shape == 0:
                self.d.ellipse(box, fill=fill)
            elif L.logo_shape == 1:
                self.d.rectangle(box, fill=fill)
            elif L.logo_shape == 2:
                self.d.polygon([(lx, ly - s), (lx + s, ly + s), (lx - s, ly + s)], fill=fill)
            else:
                for i in range(3):
                    yy = ly - s + i * s * 0.8
                    self.d.rectangle([lx - s, yy, lx + s, yy + s * 0.4], fill=fill)
        elif pat == "logo" and self.f:
            s = 0.03 * P * L.logo_scale
            self.d.ellipse(
                [
                    cx + self.f * self.sw * 0.3 - s,
                    self.shoulder_y + 0.07 * P - s,
                    cx + self.f * self.sw * 0.3 + s,
                    self.shoulder_y + 0.07 * P + s,
                ],
                fill=self.c(L.pattern),
            )
        if view == "front":
            if t == "jacket" or t == "coat":
                iw = self.hw * (0.22 if t == "jacket" else 0.16)
                bottom = self.hip_y if t == "jacket" else self.shoulder_y + 0.14 * P
                self.d.polygon(
                    [
                        (cx - iw * 1.6, self.shoulder_y - 0.01 * P),
                        (cx + iw * 1.6, self.shoulder_y - 0.01 * P),
                        (cx + iw, bottom),
                        (cx - iw, bottom),
                    ],
                    fill=self.c(L.inner),
                )
                self.d.line(
                    [(cx - iw, self.shoulder_y), (cx - iw, self.hip_y)], fill=dark, width=max(1, int(P * 0.006))
                )
                self.d.line(
                    [(cx + iw, self.shoulder_y), (cx + iw, self.hip_y)], fill=dark, width=max(1, int(P * 0.006))
                )
            elif t == "shirt":
                cw = self.hw * 0.35
                light = self.c(L.upper, 1.25)
                self.d.polygon(
                    [
                        (cx - cw, self.shoulder_y - 0.012 * P),
                        (cx, self.shoulder_y + 0.03 * P),
                        (cx - cw * 0.2, self.shoulder_y + 0.035 * P),
                    ],
                    fill=light,
                )
                self.d.polygon(
                    [
                        (cx + cw, self.shoulder_y - 0.012 * P),
                        (cx, self.shoulder_y + 0.03 * P),
                        (cx + cw * 0.2, self.shoulder_y + 0.035 * P),
                    ],
                    fill=light,
                )
                self.d.line(
                    [(cx, self.shoulder_y + 0.03 * P), (cx, self.hip_y)], fill=dark, width=max(1, int(P * 0.005))
                )
            elif t == "hoodie":
                pw = L.waist * P * 0.6
                self.d.rectangle(
                    [cx - pw, ymid + 0.03 * P, cx + pw, self.hip_y - 0.01 * P],
                    outline=dark,
                    width=max(1, int(P * 0.008)),
                )
            elif t in ("t_shirt", "tank_top", "sweater"):
                nw = self.hw * 0.26
                self.d.polygon(
                    [
                        (cx - nw, self.shoulder_y - 0.012 * P),
                        (cx + nw, self.shoulder_y - 0.012 * P),
                        (cx, self.shoulder_y + 0.025 * P),
                    ],
                    fill=self.c(L.skin),
                )
        if view == "back" and t in ("shirt", "jacket"):  # a collar tells them apart from behind
            cw = self.hw * (0.36 if t == "shirt" else 0.46)
            self.d.rectangle(
                [
                    cx - cw,
                    self.shoulder_y - 0.014 * P,
                    cx + cw,
                    self.shoulder_y + (0.012 if t == "shirt" else 0.022) * P,
                ],
                fill=self.c(L.upper, 1.3 if t == "shirt" else 0.6),
            )
        if t == "sweater":
            hem = [p for p in poly if abs(p[1] - (self.hip_y + 0.02 * P)) < 1e-6]
            if len(hem) == 2:
                self.d.line(hem, fill=dark, width=max(1, int(P * 0.012)))
        if self.f == 0 and self.L.words["bag"] == "backpack" and view == "front":
            for s in (-1, 1):
                x = cx + s * L.shoulder * P * 0.55
                self.d.line(
                    [(x, self.shoulder_y), (x + s * 0.01 * P, ymid)],
                    fill=self.c(L.bag, 0.8),
                    width=max(1, int(P * 0.03)),
                )

    def _arm(self, arm) -> None:
        sh, el, wr, shade, side = arm
        L, t = self.L, self.L.words["upper_type"]
        aw = self.arm_w
        skin = self.c(L.skin, shade)
        sleeve = {"tank_top": 0.0, "t_shirt": 0.45}.get(t, 1.0)
        if sleeve < 1.0:
            _limb(self.d, sh, el, aw * 0.92, aw * 0.8, skin)
            _limb(self.d, el, wr, aw * 0.8, aw * 0.66, skin)
        if sleeve > 0:
            end = _lerp(sh, el, sleeve) if sleeve < 1 else el
            pat = L.words["upper_pattern"]

            def draw(dr, fill):
                _limb(dr, sh, end, aw * 1.05, aw * 0.98, fill)
                if sleeve >= 1.0:
                    _limb(dr, el, wr, aw * 0.95, aw * 0.8, fill)

            self.garment(draw, L.upper, pat, shade * (0.9 if self.f and shade == 1.0 else 1.0))
            if t == "sweater" and sleeve >= 1.0:
                _limb(self.d, _lerp(el, wr, 0.85), wr, aw * 0.85, aw * 0.8, self.c(L.upper, shade * 0.7))
        r = aw * 0.42
        self.d.ellipse([wr[0] - r, wr[1] - r * 0.6, wr[0] + r, wr[1] + r * 1.4], fill=skin)
