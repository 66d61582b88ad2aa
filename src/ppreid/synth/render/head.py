"""The head of a painted pedestrian: skin, face, hair styles, hats, glasses, long hair and hoods.
A mixin of :class:`ppreid.synth.render.person.PersonPainter`, which holds the geometry it reads (``hcx``,
``hh``, ``hw``, ``f``, ``y0``, ``shoulder_y``, ``P``, ``L``, ``d``) and calls these in painting order."""

from __future__ import annotations

import math

import numpy as np

from ppreid.synth.render.draw import fill_rgba as _fill
from ppreid.synth.render.draw import limb as _limb
from ppreid.synth.render.draw import mix as _mix


class HeadPainter:
    """Head, hair, hat and glasses drawing for ``PersonPainter``."""

    def _head(self) -> None:
        L, P, view = self.L, self.P, self.pose.view
        hx, hh, hw = self.hcx, self.hh, self.hw
        y0 = self.y0
        self.d.rectangle(
            [hx - hw * 0.2, y0 + hh * 0.75, hx + hw * 0.2, self.shoulder_y + 0.01 * P], fill=self.c(L.skin, 0.92)
        )
        box = [hx - hw / 2, y0, hx + hw / 2, y0 + hh]
        style, hat = L.words["hair_style"], L.words["hat"]
        hair = self.c(L.hair)
        e = hh * 0.07 * L.hair_volume
        big = [box[0] - e, box[1] - e, box[2] + e, box[3] + e * 0.3]
        if style == "curly":
            big = [box[0] - 2.4 * e, box[1] - 2.2 * e, box[2] + 2.4 * e, box[3] - hh * 0.15]
        self.d.ellipse(box, fill=self.c(L.skin))
        if view == "back":
            back_box = [box[0] - e * 0.6, box[1] - e, box[2] + e * 0.6, box[3] - hh * 0.08]
            self.d.ellipse(
                back_box if style != "curly" else big,
                fill=hair if style != "buzz_cut" else self.c(_mix(L.hair, L.skin)),
            )
        else:
            self._face(box)
            self._hair_front(box, big, style, hair)
        if style == "ponytail" and view != "front":
            tx = hx - self.f * hw * 0.55
            self._tail((tx, y0 + hh * 0.45), hair)
        elif style == "ponytail":  # from the front, the tail falls over one shoulder
            side = self.L.bag_side
            _limb(
                self.d,
                (hx + side * hw * 0.42, y0 + hh * 0.6),
                (hx + side * hw * 0.62, self.shoulder_y + 0.05 * P),
                hh * 0.28,
                hh * 0.16,
                hair,
            )
        if style == "bun":
            r = hh * 0.2
            bx = hx - self.f * hw * 0.45
            by = y0 + (hh * 0.05 if view == "front" else hh * 0.15)
            self.d.ellipse([bx - r, by - r, bx + r, by + r], fill=hair)
        if hat != "none":
            self._hat(box, hat)
        if L.words["glasses"] != "none" and view != "back":
            self._glasses(box)

    def _hair_front(self, box, big, style, hair) -> None:
        hx, hh, hw, f = self.hcx, self.hh, self.hw, self.f
        if style == "buzz_cut":
            hair = self.c(_mix(self.L.hair, self.L.skin))
            big = [box[0], box[1] - hh * 0.02, box[2], box[3]]
        cap = [big[0], big[1], big[2], big[1] + (big[3] - big[1]) * (0.82 if style != "curly" else 1.0)]
        self.d.chord(cap, 180, 360, fill=hair)
        if style == "curly":
            r = hh * 0.16
            for a in np.linspace(math.pi * 0.9, math.pi * 2.1, 7):
                x = hx + math.cos(a) * hw * 0.62
                y = box[1] + hh * 0.35 + math.sin(a) * hh * 0.55
                self.d.ellipse([x - r, y - r, x + r, y + r], fill=hair)
        if f:
            self.d.chord(big, 90, 270, fill=hair) if f > 0 else self.d.chord(big, 270, 90, fill=hair)
            ear_x = hx - f * hw * 0.05
            r = hh * 0.09
            self.d.ellipse(
                [ear_x - r, box[1] + hh * 0.45, ear_x + r, box[1] + hh * 0.65], fill=self.c(self.L.skin, 0.85)
            )
            if style == "long":
                x0 = hx - f * hw * 0.5
                self.d.polygon(
                    [
                        (x0, box[1] + hh * 0.3),
                        (hx - f * hw * 0.05, box[1] + hh * 0.3),
                        (hx - f * hw * 0.15, self.shoulder_y + 0.09 * self.P),
                        (x0 - f * hw * 0.1, self.shoulder_y + 0.1 * self.P),
                    ],
                    fill=hair,
                )

    def _face(self, box) -> None:
        hx, hh, hw, f = self.hcx, self.hh, self.hw, self.f
        eye = _fill((40, 30, 28))
        ey = box[1] + hh * 0.52
        r = max(0.6, hh * 0.05)
        if f == 0:
            for s in (-1, 1):
                self.d.ellipse([hx + s * hw * 0.2 - r, ey - r, hx + s * hw * 0.2 + r, ey + r], fill=eye)
            self.d.line(
                [(hx - hw * 0.12, box[1] + hh * 0.78), (hx + hw * 0.12, box[1] + hh * 0.78)],
                fill=self.c(self.L.skin, 0.7),
                width=max(1, int(hh * 0.04)),
            )
        else:
            ex = hx + f * hw * 0.3
            self.d.ellipse([ex - r, ey - r, ex + r, ey + r], fill=eye)
            nx = hx + f * hw * 0.5
            self.d.polygon(
                [
                    (nx - f * hw * 0.05, box[1] + hh * 0.48),
                    (nx + f * hh * 0.09, box[1] + hh * 0.66),
                    (nx - f * hw * 0.05, box[1] + hh * 0.7),
                ],
                fill=self.c(self.L.skin),
            )

    def _tail(self, root, hair) -> None:
        hh = self.hh
        x, y = root
        _limb(self.d, (x, y), (x - self.f * hh * 0.2, y + hh * 0.9), hh * 0.3, hh * 0.14, hair)

    def _hat(self, box, hat: str) -> None:
        L, hh, hw, f = self.L, self.hh, self.hw, self.f
        fill, dark = self.c(L.hat), self.c(L.hat, 0.72)
        e = hh * 0.08
        if hat == "beanie":
            dome = [box[0] - e, box[1] - hh * 0.12, box[2] + e, box[1] + hh * 0.95]
            self.d.chord(dome, 180, 360, fill=fill)
            yb = box[1] + hh * 0.36
            self.d.rectangle([box[0] - e, yb, box[2] + e, yb + hh * 0.12], fill=dark)
            return
        dome = [box[0] - e * 0.5, box[1] - hh * 0.1, box[2] + e * 0.5, box[1] + hh * 0.8]
        self.d.chord(dome, 180, 360, fill=fill)
        by = box[1] + hh * 0.33
        if hat == "sun_hat":
            self.d.ellipse([self.hcx - hw * 0.95, by - hh * 0.07, self.hcx + hw * 0.95, by + hh * 0.1], fill=dark)
        elif f:
            x0 = self.hcx + f * hw * 0.2
            self.d.polygon(
                [(x0, by - hh * 0.05), (x0 + f * hw * 0.55, by + hh * 0.02), (x0, by + hh * 0.06)], fill=dark
            )
        elif self.pose.view == "front":
            self.d.ellipse([box[0] - e * 0.4, by - hh * 0.02, box[2] + e * 0.4, by + hh * 0.13], fill=dark)

    def _glasses(self, box) -> None:
        """A dark band across the eyes, ~0.24 of the head tall (3 px at 128x64) and nearly as wide as the
        face: sunglasses filled black, glasses a thick dark frame around darkened lenses; from the side, one
        lens and the temple arm back to the ear."""
        hx, hh, hw, f = self.hcx, self.hh, self.hw, self.f
        sun = self.L.words["glasses"] == "sunglasses"
        frame = _fill((16, 16, 20))
        lens = frame if sun else self.c(_mix(self.L.skin, (40, 44, 52), 0.55))
        ey = box[1] + hh * 0.5
        gw, gh = hw * 0.2, hh * 0.12
        lw = max(1, int(round(hh * 0.07)))
        centres = [hx - hw * 0.22, hx + hw * 0.22] if f == 0 else [hx + f * hw * 0.3]
        for x in centres:
            self.d.rectangle([x - gw, ey - gh, x + gw, ey + gh], fill=lens, outline=frame, width=lw)
        if f == 0:
            self.d.line([(hx - hw * 0.05, ey - gh * 0.3), (hx + hw * 0.05, ey - gh * 0.3)], fill=frame, width=lw)
            for s in (-1, 1):  # temple arms at the sides of the face
                self.d.line([(hx + s * hw * 0.42, ey - gh * 0.3), (hx + s * hw * 0.5, ey)], fill=frame, width=lw)
        else:
            self.d.line([(centres[0] - f * gw, ey - gh * 0.3), (hx - f * hw * 0.15, ey)], fill=frame, width=lw)

    def _long_hair_behind(self) -> None:
        hx, hh, hw, P = self.hcx, self.hh, self.hw, self.P
        y = self.y0 + hh * 0.4
        self.d.rounded_rectangle(
            [hx - hw * 0.62 * self.L.hair_volume, y, hx + hw * 0.62 * self.L.hair_volume, self.shoulder_y + 0.1 * P],
            radius=hw * 0.3,
            fill=self.c(self.L.hair),
        )

    def _long_hair_back(self) -> None:
        hx, hh, hw, P = self.hcx, self.hh, self.hw, self.P
        self.d.rounded_rectangle(
            [
                hx - hw * 0.58 * self.L.hair_volume,
                self.y0 + hh * 0.3,
                hx + hw * 0.58 * self.L.hair_volume,
                self.shoulder_y + 0.12 * P,
            ],
            radius=hw * 0.3,
            fill=self.c(self.L.hair),
        )

    def _hood(self, behind: bool) -> None:
        hx, hh, hw, P = self.hcx, self.hh, self.hw, self.P
        fill = self.c(self.L.upper, 0.85)
        if behind:
            self.d.ellipse([hx - hw * 0.75, self.y0 + hh * 0.55, hx + hw * 0.75, self.shoulder_y + 0.03 * P], fill=fill)
        else:
            self.d.chord(
                [hx - hw * 0.7, self.shoulder_y - 0.05 * P, hx + hw * 0.7, self.shoulder_y + 0.12 * P],
                0,
                180,
                fill=fill,
            )
