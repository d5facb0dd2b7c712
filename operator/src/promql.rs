//! Templating of the PromQL queries in Release specs.
//!
//! Queries name the Release they measure with `{{app}}`, `{{version}}`, `{{namespace}}` and
//! `{{stableVersion}}`, and the Services of a routed rollout with `{{canaryService}}` and
//! `{{stableService}}` (`<app>-canary`, `<app>-stable`: each selects one version's pods, so a
//! gateway's per-Service metrics measure the canary alone, not the app's mix). The values come from
//! fields whose schema only allows `[-A-Za-z0-9_.]`, so they can be put inside PromQL string
//! literals as they are.

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
        "unknown placeholder {{{{{0}}}}} (known: {{{{app}}}}, {{{{version}}}}, {{{{namespace}}}}, {{{{stableVersion}}}}, \
         {{{{canaryService}}}}, {{{{stableService}}}})"
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
        match after[..end].trim() {
            "app" => out.push_str(vars.app),
            "version" => out.push_str(vars.version),
            "namespace" => out.push_str(vars.namespace),
            "stableVersion" => out.push_str(vars.stable_version),
            "canaryService" => out.push_str(&crate::controller::release::traffic::gateway::canary_service(vars.app)),
            "stableService" => out.push_str(&crate::controller::release::traffic::gateway::stable_service(vars.app)),
            other => return Err(TemplateError::Unknown(other.to_string())),
        }
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
    fn the_services_of_a_routed_rollout_are_named_by_the_app() {
        let q = r#"sum(rate(requests{service="{{namespace}}-{{canaryService}}-80"}[1m])) / {{stableService}}"#;
        assert_eq!(
            render(q, &VARS).unwrap(),
            r#"sum(rate(requests{service="prod-shop-canary-80"}[1m])) / shop-stable"#
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

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const KNOWN: [&str; 4] = ["app", "version", "namespace", "stableVersion"];

    /// Values as the schemas allow them: DNS labels for the app and namespace, `[-A-Za-z0-9_.]`
    /// for versions (the stable version may be empty: there is none yet).
    fn schema_vars() -> impl Strategy<Value = [String; 4]> {
        (
            "[a-z]([-a-z0-9]{0,20}[a-z0-9])?",
            "[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?",
            "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?",
            "([A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?)?",
        )
            .prop_map(|(a, v, n, s)| [a, v, n, s])
    }

    fn vars(v: &[String; 4]) -> Vars<'_> {
        Vars { app: &v[0], version: &v[1], namespace: &v[2], stable_version: &v[3] }
    }

    fn value<'a>(vars: &'a Vars<'a>, name: &str) -> &'a str {
        match name {
            "app" => vars.app,
            "version" => vars.version,
            "namespace" => vars.namespace,
            _ => vars.stable_version,
        }
    }

    /// Hostile query text: braces in every arrangement, quotes, backslashes, unicode.
    fn hostile_query() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("{{".to_string()),
            Just("}}".to_string()),
            Just("{".to_string()),
            Just("}".to_string()),
            Just("\"".to_string()),
            Just("\\".to_string()),
            prop::sample::select(KNOWN.to_vec()).prop_map(str::to_string),
            "[ \t\n]{0,3}",
            "[a-zA-Z_=~!(),]{0,8}",
            any::<char>().prop_map(String::from),
        ];
        prop_oneof![prop::collection::vec(piece, 0..24).prop_map(|p| p.concat()), any::<String>(),]
    }

    /// A piece of a well-formed template.
    #[derive(Clone, Debug)]
    enum Piece {
        /// Text without braces (PromQL, quotes, backslashes, unicode).
        Text(String),
        /// `{{ name }}` with optional spaces inside the braces.
        Placeholder { name: &'static str, left: usize, right: usize },
        /// A label matcher around a placeholder: `{label="{{name}}"}`.
        Matcher { label: String, name: &'static str },
    }

    fn piece() -> impl Strategy<Value = Piece> {
        let name = prop::sample::select(KNOWN.to_vec());
        prop_oneof![
            "[^{}]{0,12}".prop_map(Piece::Text),
            (name.clone(), 0..3usize, 0..3usize).prop_map(|(name, left, right)| Piece::Placeholder {
                name,
                left,
                right
            }),
            ("[a-z_]{1,8}", name).prop_map(|(label, name)| Piece::Matcher { label, name }),
        ]
    }

    /// The template text of `pieces`, and what it must render to with `vars`.
    fn template(pieces: &[Piece], vars: &Vars<'_>) -> (String, String) {
        let (mut query, mut rendered) = (String::new(), String::new());
        for p in pieces {
            match p {
                Piece::Text(t) => {
                    query.push_str(t);
                    rendered.push_str(t);
                }
                Piece::Placeholder { name, left, right } => {
                    query.push_str(&format!("{{{{{}{name}{}}}}}", " ".repeat(*left), " ".repeat(*right)));
                    rendered.push_str(value(vars, name));
                }
                Piece::Matcher { label, name } => {
                    query.push_str(&format!("{{{label}=\"{{{{{name}}}}}\"}}"));
                    rendered.push_str(&format!("{{{label}=\"{}\"}}", value(vars, name)));
                }
            }
        }
        (query, rendered)
    }

    proptest! {
        /// Whatever the query, `check` and `render` return (they never panic), and `check` accepts
        /// exactly the queries `render` can render: validation does not depend on the values.
        #[test]
        fn check_and_render_never_panic_and_agree(query in hostile_query(), v in schema_vars()) {
            prop_assert_eq!(check(&query), render(&query, &vars(&v)).map(|_| ()));
            if let Err(TemplateError::Unknown(name)) = check(&query) {
                prop_assert!(!KNOWN.contains(&name.trim()), "a known placeholder was refused: {:?}", name);
            }
        }

        /// Values are put in as they are and never scanned for placeholders themselves, even hostile
        /// ones: the schemas, not `render`, keep quotes and backslashes out of them.
        #[test]
        fn values_are_substituted_verbatim(pieces in prop::collection::vec(piece(), 0..12), raw in any::<[String; 4]>()) {
            let v = vars(&raw);
            let (query, expected) = template(&pieces, &v);
            prop_assert_eq!(render(&query, &v), Ok(expected));
        }

        /// A template made only of known placeholders and brace-free text renders with schema-valid
        /// values to a query with no placeholder left, no quote or backslash added, and rendering it
        /// again changes nothing.
        #[test]
        fn known_placeholders_render_completely(pieces in prop::collection::vec(piece(), 0..12), v in schema_vars()) {
            let v = vars(&v);
            let (query, expected) = template(&pieces, &v);
            prop_assert!(check(&query).is_ok(), "{:?} refused", query);
            let out = render(&query, &v).unwrap();
            prop_assert_eq!(&out, &expected);
            prop_assert!(!out.contains("{{") && !out.contains("}}"), "{:?} left braces in {:?}", query, out);
            for c in ['"', '\\'] {
                prop_assert_eq!(out.matches(c).count(), query.matches(c).count(), "{:?} added {:?}", out, c);
            }
            prop_assert_eq!(render(&out, &v), Ok(out.clone()));
        }
    }
}
