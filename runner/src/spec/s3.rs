//! `[s3]`: how to reach `s3://` URLs, for data, assets and outputs alike.

use serde::Deserialize;

/// `[s3]`: how to reach `s3://` URLs. Every field falls back to the standard AWS environment
/// variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`), then to AWS's defaults.
///
/// ```toml
/// [s3]
/// endpoint = "${S3_ENDPOINT:-http://127.0.0.1:9000}"   # MinIO or another S3-compatible server
/// region = "us-east-1"
/// access_key_id = "${MINIO_ROOT_USER}"                  # never write a secret here: use ${...}
/// secret_access_key = "${MINIO_ROOT_PASSWORD}"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    /// `endpoint = "http://127.0.0.1:9000"`: an S3-compatible server instead of AWS.
    pub endpoint: Option<String>,
    /// `region = "us-east-1"` (default: `$AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// `path_style = true`: the bucket goes in the path, not the host name. Default: true when
    /// an endpoint is set (MinIO needs it), false for AWS.
    pub path_style: Option<bool>,
    /// `access_key_id = "${...}"` (default: `$AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// `secret_access_key = "${...}"` (default: `$AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// `session_token = "${...}"` (default: `$AWS_SESSION_TOKEN`).
    pub session_token: Option<String>,
    /// `anonymous = true`: send unsigned requests (public buckets); no credentials needed.
    #[serde(default)]
    pub anonymous: bool,
    /// `timeout_seconds = 30`: the budget of one request: a request that fails on a connection
    /// refused, reset or timed out, or a 5xx answer, is sent again with backoff (from the byte
    /// where a read stopped) until this long has passed since it was first sent; then the run
    /// fails. Data is read in ranges of 8 MiB, one request each, so a long read is many short
    /// requests, each with its own budget: an outage shorter than this costs no data.
    pub timeout_seconds: Option<u64>,
}
