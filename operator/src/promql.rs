//! Templating of the PromQL queries in Release specs.
//!
//! Queries name the Release they measure with `{{app}}`, `{{version}}`, `{{namespace}}` and
//! `{{stableVersion}}`. The values come from fields whose schema only allows `[-A-Za-z0-9_.]`, so
//! they can be put inside PromQL string literals as they are.

use thiserror::Error;

/// Values substituted into a query.
#[derive(Clone, Debug, Default)]
pub struct Vars<'a> {
    pub app: &'a str,
    pub version: &'a str,
    pub namespace: &'a str,
    /// Version of the Release being replaced; empty when there is none.
    pub stable_version: &'a str,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error(
        "unknown placeholder {{{{{0}}}}} (known: {{{{app}}}}, {{{{version}}}}, {{{{namespace}}}}, {{{{stableVersion}}}})"
    )]
    Unknown(String),
    #[error("unclosed placeholder: '{{{{' without '}}}}'")]
    Unclosed,
}

/// Checks that every placeholder in `query` is known.
pub fn check(query: &str) -> Result<(), TemplateError> {
    render(query, &Vars::default()).map(|_| ())
}

/// Replaces the placeholders of `query` with `vars`.
pub fn render(query: &str, vars: &Vars<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let value = match after[..end].trim() {
            "app" => vars.app,
            "version" => vars.version,
            "namespace" => vars.namespace,
            "stableVersion" => vars.stable_version,
            other => return Err(TemplateError::Unknown(other.to_string())),
        };
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARS: Vars<'static> = Vars { app: "shop", version: "1.2.0", namespace: "prod", stable_version: "1.1.0" };

    #[test]
    fn renders_every_placeholder() {
        let q = r#"sum(rate(http_errors{app="{{app}}",version="{{ version }}",ns="{{namespace}}"}[1m])) / {{stableVersion}}"#;
        assert_eq!(
            render(q, &VARS).unwrap(),
            r#"sum(rate(http_errors{app="shop",version="1.2.0",ns="prod"}[1m])) / 1.1.0"#
        );
    }

    #[test]
    fn leaves_queries_without_placeholders_alone() {
        assert_eq!(render("up{job=\"x\"}", &VARS).unwrap(), "up{job=\"x\"}");
        // PromQL itself uses single braces; only double braces are placeholders.
        assert_eq!(render("sum by (a) (x{a=~\"b{2}\"})", &VARS).unwrap(), "sum by (a) (x{a=~\"b{2}\"})");
    }

    #[test]
    fn rejects_unknown_and_unclosed_placeholders() {
        assert_eq!(check("x{{pod}}"), Err(TemplateError::Unknown("pod".into())));
        assert_eq!(check("x{{app"), Err(TemplateError::Unclosed));
        assert!(TemplateError::Unknown("pod".into()).to_string().contains("{{pod}}"));
    }
}
