"""Derives the coefficients of kiln's f32 `erf` (codegen/src/kernel/math.rs, `erf32`).

For 1 <= |x| <= 4, erf(x) = 1 - exp(-x^2) * q(x) with q(x) = erfc(x) * exp(x^2), a smooth
function fitted here by a polynomial in u = (x - 2.5) / 1.5 in [-1, 1] (least squares on
Chebyshev nodes, evaluated in f64). Prints the coefficients (lowest degree first) and the
largest relative error of the resulting erf on a dense grid. Needs only numpy:

    python3 scripts/fit_erf.py
"""
import math

import numpy as np

DEGREE = 12
nodes = np.cos(np.pi * (np.arange(4000) + 0.5) / 4000)  # Chebyshev nodes in [-1, 1]
xs = 2.5 + 1.5 * nodes
q = np.array([math.erfc(x) * math.exp(x * x) for x in xs])
coeffs = np.polynomial.polynomial.polyfit(nodes, q, DEGREE)
grid = np.linspace(1.0, 4.0, 200001)
u = (grid - 2.5) / 1.5
approx = 1.0 - np.exp(-grid * grid) * np.polynomial.polynomial.polyval(u, coeffs)
exact = np.array([math.erf(x) for x in grid])
print("max relative error of erf on [1, 4]: %.3e" % np.max(np.abs(approx - exact) / exact))
print("coefficients:")
for c in coeffs:
    print("    %.17e," % c)
