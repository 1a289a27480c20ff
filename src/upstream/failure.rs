//! A failed exchange with a backend, and the one place it is recorded (`Upstream::fail`): the
//! `backend_failures_total` metric, passive health and a debug log line, for every path
//! (tcp and http, connect, response head and response body).

use super::{Lease, Upstream};

/// What went wrong with a backend: the `kind` label of `backend_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Refused, unreachable, or a backend TLS certificate that fails verification.
    Connect,
    /// `connect_timeout`, or `response_timeout` before the response head.
    Timeout,
    /// The connection broke in the middle of an exchange.
    Reset,
    /// The backend itself answered 502, 503 or 504.
    Status,
    /// A response fulcrum cannot pass on: ambiguous framing, an unreadable head, a bad chunk.
    Protocol,
}

impl Failure {
    /// Every kind, for series that must exist before the first failure.
    pub const ALL: [Failure; 5] = [
        Failure::Connect,
        Failure::Timeout,
        Failure::Reset,
        Failure::Status,
        Failure::Protocol,
    ];

    /// The metric label and the log's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Reset => "reset",
            Failure::Status => "status",
            Failure::Protocol => "protocol",
        }
    }
}

impl Upstream {
    /// Records `failure` of the lease's backend: the metric, passive health, a debug line.
    pub fn fail(&self, lease: &Lease, failure: Failure) {
        let kind = failure.as_str();
        tracing::debug!(upstream = %self.name, backend = %lease.backend.addr, kind, "backend failure");
        crate::metrics::backend_failure(&self.name, &lease.backend.addr, kind);
        self.record_failure(lease.index, kind);
    }
}

#[cfg(test)]
mod tests {
    use super::Failure;

    #[test]
    fn kinds_are_the_documented_labels() {
        let labels: Vec<&str> = Failure::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(
            labels,
            ["connect", "timeout", "reset", "status", "protocol"]
        );
    }
}
