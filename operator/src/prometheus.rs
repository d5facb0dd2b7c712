//! A small client of Prometheus' HTTP API (`/api/v1/query`), used by analysis and scaling.

use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum QueryError {
    #[error("Prometheus unreachable: {0}")]
    Unreachable(String),
    #[error("Prometheus rejected the query: {0}")]
    Rejected(String),
    #[error("the query returned no data")]
    Empty,
    #[error("the query returned {0} series; it must return one number")]
    Ambiguous(usize),
    #[error("the query returned a value that is not a number: {0}")]
    NotANumber(String),
}

/// Prometheus at `base_url` (e.g. `http://127.0.0.1:9090`).
#[derive(Clone, Debug)]
pub struct Prometheus {
    base_url: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

impl Prometheus {
    /// A client of the Prometheus HTTP API at `base_url`, built once per process: its connections
    /// are pooled across every analysis and scaling read.
    pub fn new(base_url: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Prometheus { base_url: base_url.trim_end_matches('/').to_string(), http })
    }

    /// Runs an instant query that must yield exactly one number.
    pub async fn query_scalar(&self, query: &str) -> Result<f64, QueryError> {
        let url = format!("{}/api/v1/query", self.base_url);
        let resp = self
            .http
            .post(url)
            .form(&[("query", query)])
            .send()
            .await
            .map_err(|e| QueryError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let body: Response = resp.json().await.map_err(|e| QueryError::Unreachable(format!("{status}: {e}")))?;
        if body.status != "success" {
            return Err(QueryError::Rejected(body.error.unwrap_or_else(|| status.to_string())));
        }
        parse(body.data.ok_or(QueryError::Empty)?)
    }
}

fn parse(data: Data) -> Result<f64, QueryError> {
    let sample = match data.result_type.as_str() {
        "scalar" => data.result.clone(),
        "vector" => {
            let series = data.result.as_array().cloned().unwrap_or_default();
            match series.len() {
                0 => return Err(QueryError::Empty),
                1 => series[0]["value"].clone(),
                n => return Err(QueryError::Ambiguous(n)),
            }
        }
        other => return Err(QueryError::Rejected(format!("unsupported result type {other}"))),
    };
    let text = sample[1].as_str().unwrap_or_default().to_string();
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(QueryError::NotANumber(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(result_type: &str, result: serde_json::Value) -> Data {
        Data { result_type: result_type.into(), result }
    }

    #[test]
    fn one_series_or_a_scalar_is_a_number() {
        assert_eq!(parse(data("vector", json!([{"metric": {}, "value": [1.0, "0.25"]}]))).unwrap(), 0.25);
        assert_eq!(parse(data("scalar", json!([1.0, "3"]))).unwrap(), 3.0);
    }

    #[test]
    fn no_data_several_series_and_nan_are_errors() {
        assert!(matches!(parse(data("vector", json!([]))), Err(QueryError::Empty)));
        let two = json!([{"value": [1, "1"]}, {"value": [1, "2"]}]);
        assert!(matches!(parse(data("vector", two)), Err(QueryError::Ambiguous(2))));
        assert!(matches!(parse(data("vector", json!([{"value": [1, "NaN"]}]))), Err(QueryError::NotANumber(_))));
        assert!(matches!(parse(data("matrix", json!([]))), Err(QueryError::Rejected(_))));
    }
}
