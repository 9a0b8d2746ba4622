//! EKS bearer tokens, checked as the cluster's authenticator (aws-iam-authenticator) checks them: the
//! token is `k8s-aws-v1.` + the base64url of a presigned STS `GetCallerIdentity` URL whose signed headers
//! include `x-k8s-aws-id`; the server calls that URL — here on an STS stand-in (moto) — with
//! `x-k8s-aws-id` set to its cluster id, and the caller is who STS says it is.

use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

/// How the server checks bearer tokens.
#[derive(Debug, Clone)]
pub struct EksAuth {
    /// The cluster id the token must be signed for (the `x-k8s-aws-id` header).
    pub cluster_id: String,
    /// `host:port` of the STS service that answers the presigned call.
    pub sts: String,
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (hex, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Seconds since the epoch of an ISO 8601 basic time (`20261124T130000Z`, as SigV4 writes it).
fn epoch(t: &str) -> Option<i64> {
    let part = |r: std::ops::Range<usize>| t.get(r);
    let extended = format!(
        "{}-{}-{}T{}:{}:{}Z",
        part(0..4)?,
        part(4..6)?,
        part(6..8)?,
        part(9..11)?,
        part(11..13)?,
        part(13..15)?
    );
    updraft_engine::literal::parse_datetime(&extended)
        .ok()
        .map(|ts| ts.seconds)
}

/// The caller's ARN when `authorization` (the header's value) carries a valid token, else why not.
pub fn check(auth: &EksAuth, authorization: Option<&str>) -> Result<String, String> {
    let bearer = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or("no bearer token")?;
    let encoded = bearer
        .strip_prefix("k8s-aws-v1.")
        .ok_or("the token is not an EKS token (k8s-aws-v1.)")?;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|e| format!("the token is not base64url: {e}"))?;
    let url = String::from_utf8(url).map_err(|_| "the token's URL is not text")?;
    let rest = url.strip_prefix("https://").ok_or("the URL is not https")?;
    let (host, path_query) = rest.split_once('/').ok_or("the URL has no path")?;
    let regional = host
        .strip_prefix("sts.")
        .and_then(|h| h.strip_suffix(".amazonaws.com"))
        .is_some_and(|r| r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if host != "sts.amazonaws.com" && !regional {
        return Err(format!("the URL's host {host} is not STS"));
    }
    let query = path_query
        .strip_prefix('?')
        .ok_or("the URL's path is not /")?;
    let params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    if get("Action") != "GetCallerIdentity" || get("Version") != "2011-06-15" {
        return Err("the URL does not call GetCallerIdentity".into());
    }
    if get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" || get("X-Amz-Signature").len() != 64 {
        return Err("the URL is not SigV4-presigned".into());
    }
    if !get("X-Amz-SignedHeaders")
        .split(';')
        .any(|h| h == "x-k8s-aws-id")
    {
        return Err("the signature does not cover x-k8s-aws-id".into());
    }
    let expires: i64 = get("X-Amz-Expires")
        .parse()
        .map_err(|_| "no X-Amz-Expires")?;
    if !(0..=900).contains(&expires) {
        return Err(format!("X-Amz-Expires {expires} is over 15 minutes"));
    }
    let signed = epoch(get("X-Amz-Date")).ok_or("no X-Amz-Date")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if now - signed > 15 * 60 || signed - now > 5 * 60 {
        return Err("the token has expired".into());
    }
    // Ask STS who signed it, with the cluster id the signature must cover.
    let mut conn = std::net::TcpStream::connect(&auth.sts).map_err(|e| format!("STS: {e}"))?;
    let request = format!(
        "GET /{path_query} HTTP/1.1\r\nHost: {host}\r\nx-k8s-aws-id: {}\r\nConnection: close\r\n\r\n",
        auth.cluster_id
    );
    conn.write_all(request.as_bytes())
        .map_err(|e| format!("STS: {e}"))?;
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .map_err(|e| format!("STS: {e}"))?;
    if !response.starts_with("HTTP/1.1 200") && !response.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "STS refused: {}",
            response.lines().next().unwrap_or("")
        ));
    }
    let arn = response
        .split_once("<Arn>")
        .and_then(|(_, r)| r.split_once("</Arn>"))
        .map(|(a, _)| a.to_string())
        .ok_or("STS named no caller")?;
    Ok(arn)
}
