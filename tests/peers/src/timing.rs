//! Interleaved batches, medians over rounds.
//!
//! Under TCG (and on a loaded host) the guest has slow phases that would
//! hit whichever loop happens to run then. The lane's benchmarks therefore
//! run every contender's batch in each round, in mirrored order every other
//! round ([`round_order`]), and report each one's median batch over the
//! rounds ([`median`]).

use std::time::Instant;

/// Nanoseconds per iteration of `n` back-to-back calls of `op`.
pub fn per_op_ns(n: usize, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        op();
    }
    start.elapsed().as_nanos() as f64 / n.max(1) as f64
}

/// The median of `samples`; `NaN` when there are none.
pub fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The order in which `contenders` run in round `round`: as listed in even
/// rounds, reversed in odd ones (A B, B A, ...).
pub fn round_order<T: Copy>(contenders: &[T], round: usize) -> Vec<T> {
    let mut order = contenders.to_vec();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn order_is_mirrored_every_other_round() {
        assert_eq!(round_order(&['a', 'b', 'c'], 0), ['a', 'b', 'c']);
        assert_eq!(round_order(&['a', 'b', 'c'], 1), ['c', 'b', 'a']);
        assert_eq!(round_order(&['a', 'b', 'c'], 2), ['a', 'b', 'c']);
    }

    #[test]
    fn per_op_time_is_positive_for_real_work() {
        let mut x = 0u64;
        let ns = per_op_ns(1000, || x = std::hint::black_box(x.wrapping_mul(31) + 7));
        assert!(ns > 0.0 && ns.is_finite(), "{ns}");
    }
}
