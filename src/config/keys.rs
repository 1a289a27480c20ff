//! Every table of the file with the keys it accepts: what an unknown-key error names and
//! lists.

/// The tables of the file by the keys they accept, to name the table in an unknown-key error
/// (serde reports the accepted keys but not the table). Kept in step with `raw.rs` by the
/// test `every_table_is_named`.
pub(crate) const TABLES: &[(&str, &[&str])] = &[
    (
        "at the top level",
        &["runtime", "admin", "log", "listener", "upstream"],
    ),
    (
        "in [runtime]",
        &[
            "worker_threads",
            "shutdown_timeout",
            "shutdown_delay",
            "watch_config",
        ],
    ),
    ("in [admin]", &["bind"]),
    ("in [log]", &["level", "format", "access"]),
    (
        "in [[listener]]",
        &[
            "name",
            "bind",
            "protocol",
            "upstream",
            "max_connections",
            "timeouts",
            "proxy_protocol",
            "tls",
            "route",
        ],
    ),
    ("in listener timeouts", &["header_read", "idle"]),
    (
        "in [[listener.route]]",
        &[
            "name",
            "host",
            "path",
            "path_exact",
            "methods",
            "headers",
            "upstream",
            "strip_prefix",
            "redirect",
            "respond",
            "request_headers",
            "response_headers",
        ],
    ),
    (
        "in route redirect",
        &["scheme", "host", "port", "path", "status"],
    ),
    ("in route respond", &["status", "body"]),
    ("in route header rules", &["set", "remove"]),
    (
        "in [listener.tls]",
        &["certificates", "min_version", "session_resumption", "alpn"],
    ),
    ("in certificate", &["cert", "key"]),
    (
        "in [upstream.NAME]",
        &[
            "balance",
            "backends",
            "resolve_interval",
            "connect_timeout",
            "response_timeout",
            "retries",
            "send_proxy_protocol",
            "slow_start",
            "protocol",
            "max_streams",
            "tls",
            "health",
        ],
    ),
    ("in backend", &["addr", "weight"]),
    ("in [upstream.NAME.tls]", &["server_name", "ca"]),
    (
        "in [upstream.NAME.health]",
        &[
            "check",
            "path",
            "service",
            "interval",
            "timeout",
            "unhealthy_threshold",
            "healthy_threshold",
        ],
    ),
];
