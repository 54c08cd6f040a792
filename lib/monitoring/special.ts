import { ValidationError } from '../core/errors.ts';

/**
 * Special functions behind the drift tests' p-values. Written here rather than imported: the maintained
 * npm implementation (@stdlib/math-base-special-gammainc) brings ~200 transitive packages for one function.
 * The unit tests pin these against reference values computed with that library and with published tables.
 */

// Lanczos approximation, g = 7, n = 9 (Numerical Recipes 3rd ed. §6.1): relative error below 1e-15.
const LANCZOS_G = 7;
const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
  12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
];

/** ln Γ(x) for x > 0. */
export function logGamma(x: number): number {
  if (!(x > 0)) throw new ValidationError(`logGamma needs x > 0, got ${x}`);
  if (x < 0.5) {
    // Reflection keeps the series in its accurate range.
    return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  }
  const z = x - 1;
  let sum = LANCZOS[0] as number;
  for (let i = 1; i < LANCZOS.length; i++) sum += (LANCZOS[i] as number) / (z + i);
  const t = z + LANCZOS_G + 0.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(sum);
}

const EPS = 1e-15;
const TINY = 1e-300;
const MAX_ITERATIONS = 100_000;

/** The regularized lower incomplete gamma function P(a, x) = γ(a, x) / Γ(a), for a > 0, x ≥ 0. */
export function regularizedGammaP(a: number, x: number): number {
  assertGammaArgs(a, x);
  if (x === 0) return 0;
  if (x === Number.POSITIVE_INFINITY) return 1;
  return x < a + 1 ? gammaSeries(a, x) : 1 - gammaContinuedFraction(a, x);
}

/** The regularized upper incomplete gamma function Q(a, x) = 1 − P(a, x), accurate in the far tail. */
export function regularizedGammaQ(a: number, x: number): number {
  assertGammaArgs(a, x);
  if (x === 0) return 1;
  if (x === Number.POSITIVE_INFINITY) return 0;
  return x < a + 1 ? 1 - gammaSeries(a, x) : gammaContinuedFraction(a, x);
}

function assertGammaArgs(a: number, x: number): void {
  if (!(a > 0) || !Number.isFinite(a)) throw new ValidationError(`incomplete gamma needs a > 0, got ${a}`);
  if (!(x >= 0)) throw new ValidationError(`incomplete gamma needs x >= 0, got ${x}`);
}

/** Prefactor x^a e^-x / Γ(a), in logs so that large a and x do not overflow. */
function prefactor(a: number, x: number): number {
  return Math.exp(a * Math.log(x) - x - logGamma(a));
}

// P(a, x) by its power series; converges quickly for x < a + 1.
function gammaSeries(a: number, x: number): number {
  let ap = a;
  let term = 1 / a;
  let sum = term;
  for (let n = 0; n < MAX_ITERATIONS; n++) {
    ap += 1;
    term *= x / ap;
    sum += term;
    if (Math.abs(term) < Math.abs(sum) * EPS) return Math.min(1, sum * prefactor(a, x));
  }
  throw new RangeError(`incomplete gamma series did not converge for a=${a}, x=${x}`);
}

// Q(a, x) by its continued fraction (modified Lentz); converges quickly for x ≥ a + 1.
function gammaContinuedFraction(a: number, x: number): number {
  let b = x + 1 - a;
  let c = 1 / TINY;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < MAX_ITERATIONS; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < TINY) d = TINY;
    c = b + an / c;
    if (Math.abs(c) < TINY) c = TINY;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < EPS) return Math.max(0, prefactor(a, x) * h);
  }
  throw new RangeError(`incomplete gamma continued fraction did not converge for a=${a}, x=${x}`);
}

/** P(X ≥ x) for X ~ χ²(df): the chi-squared test's p-value. */
export function chiSquaredSurvival(x: number, df: number): number {
  if (!(df > 0)) throw new ValidationError(`chi-squared needs df > 0, got ${df}`);
  if (!(x > 0)) return 1;
  return regularizedGammaQ(df / 2, x / 2);
}

/**
 * The Kolmogorov distribution's survival function Q(λ) = 2 Σ (−1)^(k−1) e^(−2k²λ²), the asymptotic
 * p-value of √n·D. Below λ = 1.18 the alternating series converges slowly, so the complementary
 * (Jacobi theta) form is used there, as in Numerical Recipes §14.3.
 */
export function kolmogorovSurvival(lambda: number): number {
  if (!(lambda > 0)) return 1;
  if (lambda < 1.18) {
    const y = Math.exp((-Math.PI * Math.PI) / (8 * lambda * lambda));
    let sum = 0;
    for (let k = 1; k <= 50; k++) {
      const term = y ** ((2 * k - 1) * (2 * k - 1));
      sum += term;
      if (term < EPS * sum) break;
    }
    return clamp01(1 - (Math.sqrt(2 * Math.PI) / lambda) * sum);
  }
  const x = Math.exp(-2 * lambda * lambda);
  let sum = 0;
  for (let k = 1; k <= 100; k++) {
    const term = x ** (k * k);
    sum += k % 2 === 1 ? term : -term;
    if (term < EPS * Math.abs(sum)) break;
  }
  return clamp01(2 * sum);
}

/** Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9), for confidence bounds. */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new ValidationError(`normal quantile needs 0 < p < 1, got ${p}`);
  const a = [
    -39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716,
    2.506628277459239,
  ];
  const b = [
    -54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572,
  ];
  const c = [
    -0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968,
    2.938163982698783,
  ];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const at = (array: number[], i: number) => array[i] as number;
  const low = 0.02425;
  if (p < low) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (
      (((((at(c, 0) * q + at(c, 1)) * q + at(c, 2)) * q + at(c, 3)) * q + at(c, 4)) * q + at(c, 5)) /
      ((((at(d, 0) * q + at(d, 1)) * q + at(d, 2)) * q + at(d, 3)) * q + 1)
    );
  }
  if (p > 1 - low) return -normalQuantile(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((at(a, 0) * r + at(a, 1)) * r + at(a, 2)) * r + at(a, 3)) * r + at(a, 4)) * r + at(a, 5)) * q) /
    (((((at(b, 0) * r + at(b, 1)) * r + at(b, 2)) * r + at(b, 3)) * r + at(b, 4)) * r + 1)
  );
}

function clamp01(value: number): number {
  return Math.min(1, Math.max(0, value));
}
