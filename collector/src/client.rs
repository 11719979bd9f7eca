//! A small blocking client of a collector's `/api/v1`, for the command line on an
//! engineer's laptop (`--url`).

use std::path::Path;
use std::time::Duration;

/// Where the token comes from when `--token-file` is not given.
pub const TOKEN_ENV: &str = "AFTERCARE_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error.
    #[error("{code}: {message} (HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach {url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("{url} answered HTTP {status} without an API error: is this a collector's API?")]
    NotOurs { url: String, status: u16 },
    #[error(
        "no token: set {TOKEN_ENV} or pass --token-file PATH (an admin creates one with `aftercare-collector token create --name YOU --role engineer --by ADMIN` on the collector, or POST /api/v1/tokens)"
    )]
    NoToken,
    #[error("cannot read the token file {path}: {detail}")]
    TokenFile { path: String, detail: String },
}

/// The token: from `file` if given, else the environment variable's value `env`.
pub fn token(file: Option<&Path>, env: Option<String>) -> Result<String, ClientError> {
    let t = match file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| ClientError::TokenFile {
            path: p.display().to_string(),
            detail: e.to_string(),
        })?,
        None => env.ok_or(ClientError::NoToken)?,
    };
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(ClientError::NoToken);
    }
    Ok(t)
}

pub struct Client {
    base: String,
    token: String,
    http: ureq::Agent,
}

impl Client {
    /// `url` is the collector's API address (`http://host:8443`, with or without
    /// `/api/v1`).
    pub fn new(url: &str, token: String) -> Client {
        let base = url.trim_end_matches('/');
        let base = base.strip_suffix("/api/v1").unwrap_or(base).to_string();
        Client {
            base,
            token,
            http: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(30)))
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// GET `path` (under `/api/v1`) with `query`.
    pub fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self
            .http
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        answer(&url, req.call())
    }

    /// Every item of a list, following `next_cursor`.
    pub fn get_all(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<serde_json::Value>, ClientError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            let page = self.get(path, &q)?;
            if let Some(a) = page["items"].as_array() {
                items.extend(a.iter().cloned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(items),
            }
        }
    }

    /// GET a file (a report): its bytes, or the API's error.
    pub fn get_bytes(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self
            .http
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        let mut resp = req.call().map_err(|e| ClientError::Transport {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        if resp.status().is_success() {
            return resp
                .body_mut()
                .with_config()
                .limit(512 << 20)
                .read_to_vec()
                .map_err(|e| ClientError::Transport {
                    url,
                    detail: e.to_string(),
                });
        }
        // An error is JSON like any other answer's.
        answer(&url, Ok(resp)).map(|_| Vec::new())
    }

    /// POST a JSON body to `path` (under `/api/v1`).
    pub fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}/api/v1{path}", self.base);
        let resp = self
            .http
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_str());
        answer(&url, resp)
    }
}

fn answer(
    url: &str,
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<serde_json::Value, ClientError> {
    let mut resp = resp.map_err(|e| ClientError::Transport {
        url: url.to_string(),
        detail: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| ClientError::Transport {
            url: url.to_string(),
            detail: e.to_string(),
        })?;
    let v: serde_json::Value = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).map_err(|_| ClientError::NotOurs {
            url: url.to_string(),
            status,
        })?
    };
    if (200..300).contains(&status) {
        return Ok(v);
    }
    match (v["code"].as_str(), v["message"].as_str()) {
        (Some(code), Some(message)) => Err(ClientError::Api {
            status,
            code: code.to_string(),
            message: message.to_string(),
        }),
        _ => Err(ClientError::NotOurs {
            url: url.to_string(),
            status,
        }),
    }
}
