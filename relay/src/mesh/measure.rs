//! What the mesh measures per peer, from QUIC's own bookkeeping (quinn's `Connection::rtt()`
//! and `stats()`), sampled about once a second: the smoothed RTT, the share of packets
//! declared lost, and when the peer last answered. Keep-alive PINGs (every second) are
//! ack-eliciting, so an idle connection still refreshes the RTT estimate
//! ([RFC 9002 §5](https://www.rfc-editor.org/rfc/rfc9002#section-5)). Pure: the caller passes
//! the counters and the time.

use std::time::Duration;

/// Weight of the newest loss ratio in the moving average.
const LOSS_WEIGHT: f32 = 0.2;

/// The counters of one connection at one sampling instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// UDP datagrams received on the connection.
    pub rx_datagrams: u64,
    /// Packets sent.
    pub sent_packets: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
}

/// One peer's measurement, kept across reconnections (the age tells how old it is).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerMeter {
    last: Counters,
    has_loss: bool,
    /// Smoothed RTT when the peer last answered, µs (0 before any answer).
    pub rtt_us: u64,
    /// Moving average of lost / sent packets, 0..=1.
    pub loss: f32,
    /// Unix ms of the last sample in which the peer answered (0: never).
    pub updated_ms: u64,
}

impl PeerMeter {
    /// A new connection to the peer: its counters start from zero.
    pub fn connected(&mut self) {
        self.last = Counters::default();
    }

    /// Takes one sample. The RTT counts only when something arrived since the last sample: a
    /// silent peer's estimate is not refreshed, so its age grows and it turns stale instead
    /// of repeating an old figure as new.
    pub fn observe(&mut self, now_ms: u64, rtt: Duration, now: Counters) {
        if now.rx_datagrams > self.last.rx_datagrams {
            self.updated_ms = now_ms;
            self.rtt_us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        }
        let sent = now.sent_packets.saturating_sub(self.last.sent_packets);
        let lost = now.lost_packets.saturating_sub(self.last.lost_packets);
        if sent > 0 {
            let ratio = (lost as f32 / sent as f32).min(1.0);
            self.loss = if self.has_loss {
                (1.0 - LOSS_WEIGHT) * self.loss + LOSS_WEIGHT * ratio
            } else {
                ratio
            };
            self.has_loss = true;
        }
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(rx: u64, sent: u64, lost: u64) -> Counters {
        Counters {
            rx_datagrams: rx,
            sent_packets: sent,
            lost_packets: lost,
        }
    }

    #[test]
    fn a_silent_peer_keeps_its_last_rtt_and_age() {
        let mut m = PeerMeter::default();
        m.connected();
        m.observe(1_000, Duration::from_millis(40), c(5, 5, 0));
        assert_eq!((m.rtt_us, m.updated_ms), (40_000, 1_000));
        // Nothing received: the estimate (which quinn may still report) is not taken.
        m.observe(2_000, Duration::from_millis(900), c(5, 9, 0));
        assert_eq!((m.rtt_us, m.updated_ms), (40_000, 1_000));
        m.observe(3_000, Duration::from_millis(41), c(6, 10, 0));
        assert_eq!((m.rtt_us, m.updated_ms), (41_000, 3_000));
    }

    #[test]
    fn loss_is_a_moving_ratio_and_reconnections_restart_counters() {
        let mut m = PeerMeter::default();
        m.observe(1, Duration::ZERO, c(10, 10, 5));
        assert!((m.loss - 0.5).abs() < 1e-6);
        m.observe(2, Duration::ZERO, c(20, 20, 5));
        assert!((m.loss - 0.4).abs() < 1e-6, "{}", m.loss);
        m.connected();
        m.observe(3, Duration::ZERO, c(1, 10, 0));
        assert!((m.loss - 0.32).abs() < 1e-6, "{}", m.loss);
    }
}
