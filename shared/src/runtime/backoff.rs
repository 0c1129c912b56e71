use std::time::Duration;

/// Exponential backoff with "equal jitter": half the step is fixed, half random, so a retry
/// never comes back at once and a crowd of retries spreads out.
/// `receive_count` starts at 1; `jitter` is in [0, 1).
pub fn backoff(receive_count: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = receive_count.saturating_sub(1).min(30);
    let step = base.saturating_mul(1u32 << exp).min(cap);
    step / 2 + step.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap_and_stays_within_its_step() {
        let (b, cap) = (Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(backoff(1, b, cap, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(1, b, cap, 0.999_999).as_secs(), 1);
        assert_eq!(backoff(3, b, cap, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(30, b, cap, 0.0), Duration::from_secs(30));
        assert!(backoff(30, b, cap, 0.999) <= cap);
        assert_eq!(backoff(u32::MAX, b, cap, 0.0), Duration::from_secs(30));
    }
}
