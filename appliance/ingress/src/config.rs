//! The ingress settings: one typed struct, defaults documented here, checked
//! by [`IngressConfig::validate`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clienthello::DEFAULT_MAX_CLIENT_HELLO_BYTES;
use crate::http::DEFAULT_MAX_HTTP_HEAD_BYTES;

/// What to do with a ClientHello that offers Encrypted Client Hello.
///
/// A passthrough proxy sees only the outer hello. With real ECH its server
/// name is the ECH configuration's public name, not the name the client
/// wants; with GREASE ECH (RFC 9849 §6.2, which current Chrome sends to every
/// server it has no ECH configuration for) it is the real name. The two are
/// indistinguishable by design.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EchPolicy {
    /// Refuse every hello that carries `encrypted_client_hello` (SPEC §5:
    /// "no guessing when SNI is missing or encrypted (ECH): reject"). Note:
    /// this refuses browsers that send GREASE ECH.
    #[default]
    Refuse,
    /// Route on the outer server name. For GREASE ECH that is the real name;
    /// for real ECH it is the public name, so the connection goes to whoever
    /// owns the public name, which is the ECH deployment's own choice, and
    /// the inner name stays encrypted to everyone else.
    RouteOuterName,
}

/// Settings of the ingress listeners. Every field has a default; a TOML
/// table may give any subset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngressConfig {
    /// Most bytes of a ClientHello on the wire, record headers included.
    /// Default 16384.
    pub max_client_hello_bytes: usize,
    /// Most bytes of an HTTP request head. Default 8192.
    pub max_http_head_bytes: usize,
    /// Time from accept for the whole ClientHello or request head to arrive.
    /// Default 5000 ms.
    pub handshake_timeout_ms: u64,
    /// Time from accept before the minimum byte rate applies. Default 1000 ms.
    pub handshake_grace_ms: u64,
    /// Minimum average rate of the hello or head after the grace time: a
    /// client that sent `n` bytes is cut at `grace + n / rate` (slowloris
    /// senders trickling a byte at a time are gone in about the grace time).
    /// 0 disables the rate rule. Default 512 bytes/s.
    pub handshake_min_bytes_per_s: u64,
    /// Time to connect to a VM (and to hand it the buffered bytes). Default 3000 ms.
    pub connect_timeout_ms: u64,
    /// A connection with no byte moving either way for this long is closed.
    /// Default 300000 ms (5 minutes).
    pub idle_timeout_ms: u64,
    /// Most client connections open at once, both ports. Default 100000.
    pub max_connections: u32,
    /// Most client connections open at once from one source: one IPv4
    /// address or one IPv6 /64. Default 512.
    pub max_connections_per_source: u32,
    /// Hellos offering ECH. Default `refuse`.
    pub ech: EchPolicy,
    /// Splice pipe pairs kept for reuse between connections. Default 1024.
    pub max_idle_pipes: usize,
    /// Once a direction carries bulk data, at most this many bytes wait
    /// unsent in the receiving socket (`TCP_NOTSENT_LOWAT`): the kernel holds
    /// less of each stream, and what the ingress passes on is still warm in
    /// cache when it is read. Bytes already sent and not yet acknowledged
    /// are not counted, so a long path keeps its whole window. A smaller
    /// cap keeps more in cache, but a stream then moves at most this much
    /// per wake-up of the ingress. In the benchmark (four streams, the
    /// endpoints on one CPU) 32 to 96 KiB gave the same throughput, about
    /// 1.15× HAProxy's, and 256 KiB only 0.93×. 0 leaves the kernel's
    /// setting. Default 65536.
    pub notsent_lowat_bytes: u32,
    /// After an HTTP error response, how long to read and discard what the
    /// client still sends, so that closing does not reset the connection
    /// before the client reads the response. Default 1000 ms.
    pub lingering_close_ms: u64,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            max_client_hello_bytes: DEFAULT_MAX_CLIENT_HELLO_BYTES,
            max_http_head_bytes: DEFAULT_MAX_HTTP_HEAD_BYTES,
            handshake_timeout_ms: 5_000,
            handshake_grace_ms: 1_000,
            handshake_min_bytes_per_s: 512,
            connect_timeout_ms: 3_000,
            idle_timeout_ms: 300_000,
            max_connections: 100_000,
            max_connections_per_source: 512,
            ech: EchPolicy::Refuse,
            max_idle_pipes: 1024,
            notsent_lowat_bytes: 65_536,
            lingering_close_ms: 1_000,
        }
    }
}

/// A setting out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ingress setting {field} = {value}: expected {expected}")]
pub struct ConfigError {
    /// The field's name.
    pub field: &'static str,
    /// The value given.
    pub value: u64,
    /// The range it must be in.
    pub expected: &'static str,
}

impl IngressConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |field: &'static str, value: u64, ok: bool, expected: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError {
                    field,
                    value,
                    expected,
                })
            }
        };
        let hello = self.max_client_hello_bytes as u64;
        check(
            "max_client_hello_bytes",
            hello,
            (512..=65_536).contains(&hello),
            "512 to 65536",
        )?;
        let head = self.max_http_head_bytes as u64;
        check(
            "max_http_head_bytes",
            head,
            (256..=65_536).contains(&head),
            "256 to 65536",
        )?;
        check(
            "handshake_timeout_ms",
            self.handshake_timeout_ms,
            (1..=120_000).contains(&self.handshake_timeout_ms),
            "1 to 120000",
        )?;
        check(
            "handshake_grace_ms",
            self.handshake_grace_ms,
            self.handshake_grace_ms <= self.handshake_timeout_ms,
            "at most handshake_timeout_ms",
        )?;
        check(
            "connect_timeout_ms",
            self.connect_timeout_ms,
            (1..=120_000).contains(&self.connect_timeout_ms),
            "1 to 120000",
        )?;
        check(
            "idle_timeout_ms",
            self.idle_timeout_ms,
            self.idle_timeout_ms >= 1,
            "at least 1",
        )?;
        check(
            "max_connections",
            u64::from(self.max_connections),
            self.max_connections >= 1,
            "at least 1",
        )?;
        check(
            "max_connections_per_source",
            u64::from(self.max_connections_per_source),
            self.max_connections_per_source >= 1,
            "at least 1",
        )?;
        let lowat = u64::from(self.notsent_lowat_bytes);
        check(
            "notsent_lowat_bytes",
            lowat,
            lowat == 0 || (4_096..=16 << 20).contains(&lowat),
            "0 (the kernel's setting) or 4096 to 16777216",
        )?;
        check(
            "lingering_close_ms",
            self.lingering_close_ms,
            self.lingering_close_ms <= 60_000,
            "at most 60000",
        )
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// What the relay of each connection needs to know.
    pub(crate) fn relay_settings(&self) -> crate::relay::RelaySettings {
        crate::relay::RelaySettings {
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            notsent_lowat: self.notsent_lowat_bytes,
        }
    }

    /// How long after accept a client that has sent `received` bytes of its
    /// hello or head may take to send the rest: the earlier of the total
    /// deadline and the rate deadline.
    pub(crate) fn handshake_deadline_after(&self, received: usize) -> Duration {
        let total = self.handshake_timeout();
        if self.handshake_min_bytes_per_s == 0 {
            return total;
        }
        let earned_ms = (received as u64).saturating_mul(1000) / self.handshake_min_bytes_per_s;
        total.min(Duration::from_millis(
            self.handshake_grace_ms.saturating_add(earned_ms),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_toml_fills_gaps() {
        IngressConfig::default().validate().unwrap();
        let c: IngressConfig =
            serde_json::from_str(r#"{"ech":"route_outer_name","max_connections_per_source":4}"#)
                .unwrap();
        assert_eq!(c.ech, EchPolicy::RouteOuterName);
        assert_eq!(c.max_connections_per_source, 4);
        assert_eq!(c.handshake_timeout_ms, 5_000);
        assert!(serde_json::from_str::<IngressConfig>(r#"{"max_conections":4}"#).is_err());
    }

    #[test]
    fn ranges_are_checked() {
        let c = IngressConfig {
            max_client_hello_bytes: 100,
            ..IngressConfig::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "max_client_hello_bytes");
        assert_eq!(
            e.to_string(),
            "ingress setting max_client_hello_bytes = 100: expected 512 to 65536"
        );
        let c = IngressConfig {
            handshake_grace_ms: 6_000,
            ..IngressConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "handshake_grace_ms");
        for bad in [1, 4_095, (16 << 20) + 1] {
            let c = IngressConfig {
                notsent_lowat_bytes: bad,
                ..IngressConfig::default()
            };
            assert_eq!(c.validate().unwrap_err().field, "notsent_lowat_bytes");
        }
        for good in [0, 4_096, 16 << 20] {
            let c = IngressConfig {
                notsent_lowat_bytes: good,
                ..IngressConfig::default()
            };
            c.validate().unwrap();
        }
    }

    #[test]
    fn the_deadline_grows_with_the_bytes_received() {
        let c = IngressConfig::default();
        assert_eq!(c.handshake_deadline_after(0), Duration::from_millis(1_000));
        assert_eq!(
            c.handshake_deadline_after(512),
            Duration::from_millis(2_000)
        );
        assert_eq!(
            c.handshake_deadline_after(1_000_000),
            Duration::from_millis(5_000)
        );
        let no_rate = IngressConfig {
            handshake_min_bytes_per_s: 0,
            ..c
        };
        assert_eq!(
            no_rate.handshake_deadline_after(0),
            Duration::from_millis(5_000)
        );
    }
}
