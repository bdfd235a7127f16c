"""The core: what every model family shares, knowing no family.

guidance (Eq. 6-9 as pure functions), schedules (alpha_bar tables, nearest-alpha_bar pairing, eps/v/x0), denoisers (the
one ``(x_t, t, cond) -> eps`` protocol and its base class), pairing (may a prior stand in for a model), sampling (one
sampler entry point over a diffusers scheduler), loading (diffusers components from folders or hub ids) and hub (what
kept a hub download from working).
"""
