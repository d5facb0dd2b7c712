//! The admission policies shipped in `crds/` beside the CRDs: rules about who may do what, which a
//! CRD's own CEL rules cannot express (they see neither the requester nor the status). Each is a
//! `ValidatingAdmissionPolicy` (or a `MutatingAdmissionPolicy`) with its binding; `kubectl apply -f
//! crds/` installs them with the kinds, once per cluster, for every install of the operator.

use serde_json::{Value, json};

use super::{GROUP, annotation, label};

/// Name of the admission policy protecting production Environments.
pub const PROTECT_PRODUCTION: &str = "phaseloop.dev-protect-production";
/// Name of the admission policy guarding approvals and the other control annotations.
pub const APPROVALS: &str = "phaseloop.dev-approvals";
/// Name of the admission policy recording a Release's author.
pub const AUTHOR: &str = "phaseloop.dev-author";
/// Name of the admission policy guarding status writes.
pub const STATUS_WRITERS: &str = "phaseloop.dev-status-writers";
/// Name of the admission policy guarding what infrastructure may hold.
pub const INFRASTRUCTURE: &str = "phaseloop.dev-infrastructure";
/// Name of the admission policy guarding an Environment's expiry annotation.
pub const ENVIRONMENT_EXPIRY: &str = "phaseloop.dev-environment-expiry";
/// The verb that lets a person approve a Release, or let a failed rollout go on
/// (`kubectl auth can-i approve releases`).
pub const APPROVE_VERB: &str = "approve";
/// The verb on `releases/status` and `environments/status` that lets an operator write status:
/// each install's RBAC grants it to its own ServiceAccount.
pub const WRITE_STATUS_VERB: &str = "write-status";

/// Control annotations a person sets on a Release, each naming who asks.
const REQUESTS: &[(&str, &str)] = &[
    ("promote", annotation::PROMOTE),
    ("abort", annotation::ABORT),
    ("revert", annotation::REVERT),
    ("override", annotation::OVERRIDE),
];

/// The spec fields that decide what rolls out and how it is checked: frozen once a Release has
/// left `Pending` or been approved (`template`, `app` and `version` never change at all).
pub const APPROVED_FIELDS: &[&str] = &["strategy", "tests", "testEnvironment", "approval"];

fn binding(kind: &str, name: &str) -> Value {
    let mut spec = json!({"policyName": name});
    if kind == "ValidatingAdmissionPolicyBinding" {
        spec["validationActions"] = json!(["Deny"]);
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

fn validating(name: &str, spec: Value) -> [Value; 2] {
    let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name}, "spec": spec});
    [policy, binding("ValidatingAdmissionPolicyBinding", name)]
}

fn rule(expression: String, message: String) -> Value {
    json!({"expression": expression, "messageExpression": message, "reason": "Forbidden"})
}

/// Whether `obj` (`object` or `oldObject`) carries annotation `key` (absent and empty differ).
fn has_annotation(obj: &str, key: &str) -> String {
    format!("({obj} != null && has({obj}.metadata.annotations) && '{key}' in {obj}.metadata.annotations)")
}

/// The value of annotation `key` of `obj`, `''` when absent (use with [`has_annotation`]).
fn annotation_value(obj: &str, key: &str) -> String {
    format!("({} ? {obj}.metadata.annotations['{key}'] : '')", has_annotation(obj, key))
}

/// Production protection: deleting a `production` Environment, or the namespace it owns, needs
/// `phaseloop.dev/allow-delete: "true"` on it, and the namespace's tier label cannot be removed or
/// changed, through the namespace itself or its `status` and `finalize` subresources (both accept
/// metadata changes). A CEL rule of the CRD keeps the tier of a production Environment.
pub fn protect_production() -> [Value; 2] {
    let allowed = |obj: &str| {
        format!(
            "(has({obj}.metadata.annotations) && '{a}' in {obj}.metadata.annotations && \
             {obj}.metadata.annotations['{a}'] == 'true')",
            a = annotation::ALLOW_DELETE
        )
    };
    let production_ns = |obj: &str| {
        format!(
            "(has({obj}.metadata.labels) && '{t}' in {obj}.metadata.labels && {obj}.metadata.labels['{t}'] == 'production')",
            t = label::TIER
        )
    };
    let quoted = |s: String| format!("'{}'", s.replace('\'', "\\'"));
    validating(
        PROTECT_PRODUCTION,
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": [GROUP], "apiVersions": ["*"], "operations": ["DELETE"], "resources": ["environments"]},
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["DELETE", "UPDATE"],
                 "resources": ["namespaces", "namespaces/status", "namespaces/finalize"]},
            ]},
            "validations": [
                rule(
                    format!(
                        "request.resource.resource != 'environments' || !has(oldObject.spec.tier) || \
                         oldObject.spec.tier != 'production' || {}",
                        allowed("oldObject")
                    ),
                    quoted(format!(
                        "production Environments are protected: set the annotation {}: \"true\" to delete one",
                        annotation::ALLOW_DELETE
                    )),
                ),
                rule(
                    format!(
                        "request.resource.resource != 'namespaces' || request.operation != 'DELETE' || !{} || {}",
                        production_ns("oldObject"),
                        allowed("oldObject")
                    ),
                    quoted(format!(
                        "this namespace belongs to a production Environment and is protected: delete the Environment \
                         (with the annotation {}: \"true\"), which deletes its namespace",
                        annotation::ALLOW_DELETE
                    )),
                ),
                rule(
                    format!(
                        "request.resource.resource != 'namespaces' || request.operation != 'UPDATE' || !{} || {}",
                        production_ns("oldObject"),
                        production_ns("object")
                    ),
                    quoted(format!(
                        "the label {} of a production Environment's namespace cannot be changed (nor through \
                         its status or finalize subresource)",
                        label::TIER
                    )),
                ),
            ],
        }),
    )
}

/// Approvals and the other control annotations of a Release, on CREATE and UPDATE:
/// - setting, changing or removing `phaseloop.dev/approved-by` needs the verb `approve` on that
///   Release (the CEL `authorizer`, the way RBAC's `bind` and `escalate` work), and a value set
///   must be the requester's user name: an empty value is refused, as is another's name;
/// - `promote`, `abort`, `revert` and `override`, when set or changed, must name the requester,
///   and `override` (going on past a failed check) needs the verb `approve` too;
/// - `phaseloop.dev/created-by` is the requester at CREATE (the [`author`] policy writes it) and
///   never changes;
/// - once a Release has left `Pending` or carries an approval, the fields that decide what rolls
///   out and how it is checked ([`APPROVED_FIELDS`]) cannot change: what was approved is what
///   rolls out.
pub fn approvals() -> [Value; 2] {
    let user = "request.userInfo.username";
    let mut variables = Vec::new();
    let mut track = |name: &str, key: &str| {
        variables.push(json!({"name": format!("{name}Had"), "expression": has_annotation("oldObject", key)}));
        variables.push(json!({"name": format!("{name}Has"), "expression": has_annotation("object", key)}));
        variables.push(json!({"name": format!("{name}Old"), "expression": annotation_value("oldObject", key)}));
        variables.push(json!({"name": format!("{name}"), "expression": annotation_value("object", key)}));
        // Set or changed by this request (a value kept as it was is not asked again).
        variables.push(json!({"name": format!("{name}Set"), "expression": format!(
            "variables.{name}Has && (!variables.{name}Had || variables.{name} != variables.{name}Old)"
        )}));
    };
    track("approval", annotation::APPROVED_BY);
    for (name, key) in REQUESTS {
        track(name, key);
    }
    track("author", annotation::CREATED_BY);
    let same = |field: &str| {
        format!(
            "(has(object.spec.{field}) == has(oldObject.spec.{field}) && \
             (!has(object.spec.{field}) || object.spec.{field} == oldObject.spec.{field}))"
        )
    };
    variables.push(json!({"name": "approved", "expression":
        "request.operation == 'UPDATE' && ((has(oldObject.status) && has(oldObject.status.phase) && \
         oldObject.status.phase != 'Pending') || (variables.approvalHad && variables.approvalOld != ''))"}));
    variables.push(json!({"name": "sameApprovedSpec", "expression":
        APPROVED_FIELDS.iter().map(|f| same(f)).collect::<Vec<_>>().join(" && ")}));
    let may = |verb: &str| {
        format!(
            "authorizer.group('{GROUP}').resource('releases').namespace(object.metadata.namespace)\
             .name(object.metadata.name).check('{verb}').allowed()"
        )
    };
    let mut validations = vec![
        rule(
            format!(
                "!(variables.approvalSet || (variables.approvalHad && !variables.approvalHas)) || {}",
                may(APPROVE_VERB)
            ),
            format!(
                "'approving a Release needs the verb {APPROVE_VERB} on releases (the ClusterRole phaseloop-approver): ' + \
                 {user} + ' may not set or remove {}'",
                annotation::APPROVED_BY
            ),
        ),
        rule(
            format!("!variables.approvalSet || variables.approval == {user}"),
            format!(
                "'{} must name the approver making the request: ' + {user} + \
                 ' (kubectl phaseloop approve sets it; an empty value approves nothing)'",
                annotation::APPROVED_BY
            ),
        ),
    ];
    for (name, key) in REQUESTS {
        validations.push(rule(
            format!("!variables.{name}Set || variables.{name} == {user}"),
            format!(
                "'{key} must name the person asking, as the API server knows them: ' + {user} + \
                 ' (kubectl phaseloop {} sets it)'",
                if *name == "override" { "promote --override" } else { name }
            ),
        ));
    }
    // Under one's own name, letting a failed rollout go on is still an approver's decision.
    validations.push(rule(
        format!("!variables.overrideSet || {}", may(APPROVE_VERB)),
        format!(
            "'letting a rollout go on past a failed check ({}) needs the verb {APPROVE_VERB} on releases (the \
             ClusterRole phaseloop-approver): ' + {user} + ' may not'",
            annotation::OVERRIDE
        ),
    ));
    validations.push(rule(
        format!(
            "request.operation == 'CREATE' ? (variables.authorHas && variables.author == {user}) : \
             (variables.authorHad == variables.authorHas && variables.author == variables.authorOld)"
        ),
        format!(
            "'{} records who created the Release (' + {user} + ' for a new one) and never changes'",
            annotation::CREATED_BY
        ),
    ));
    // A Release in an Environment's namespace belongs to the Environment's install, so that the
    // Environment's promotion rules apply to it (an install that cannot see the Environment, a
    // single-namespace one, would roll it out without them).
    let instance = |obj: &str| {
        format!(
            "(has({obj}.metadata.labels) && '{i}' in {obj}.metadata.labels ? {obj}.metadata.labels['{i}'] : '')",
            i = label::INSTANCE
        )
    };
    validations.push(rule(
        format!(
            "namespaceObject == null || !has(namespaceObject.metadata.labels) || \
             !('{e}' in namespaceObject.metadata.labels) || {} == {}",
            instance("object"),
            instance("namespaceObject"),
            e = label::ENVIRONMENT
        ),
        format!(
            "'this namespace belongs to an Environment of the phaseloop install ' + ({ns} == '' ? 'without an \
             instance id' : {ns}) + ': its Releases carry the same {i} label (or none), so that the \
             Environment\\'s promotion rules apply to them'",
            ns = instance("namespaceObject"),
            i = label::INSTANCE
        ),
    ));
    validations.push(rule(
        "!variables.approved || variables.sameApprovedSpec".into(),
        format!(
            "'spec.{} cannot change once a Release has left Pending or been approved: what was approved is \
             what rolls out (create a new Release)'",
            APPROVED_FIELDS.join(", spec.")
        ),
    ));
    validating(
        APPROVALS,
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": [GROUP], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["releases"]},
            ]},
            "variables": variables,
            "validations": validations,
        }),
    )
}

/// Records a Release's author from the request: `phaseloop.dev/created-by` is set to the
/// requester's user name at CREATE (whatever the client wrote) and put back to its recorded value
/// by any UPDATE that drops or changes it. A `MutatingAdmissionPolicy` (Kubernetes 1.36+): the
/// author comes from the API server, never from the client.
pub fn author() -> [Value; 2] {
    let key = annotation::CREATED_BY;
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": AUTHOR},
        "spec": {
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": [GROUP], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["releases"]},
            ]},
            // An UPDATE of a Release created before the policy existed has no author to keep.
            "matchConditions": [{"name": "recorded", "expression": format!(
                "request.operation == 'CREATE' || {}", has_annotation("oldObject", key)
            )}],
            // A JSON patch, not an apply configuration: that would convert the object to its schema's
            // types first and refuse a malformed one with its own words, before the schema's message.
            "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": format!(
                "has(object.metadata.annotations) ? \
                 [JSONPatch{{op: 'add', path: '/metadata/annotations/' + jsonpatch.escapeKey('{key}'), value: {author}}}] : \
                 [JSONPatch{{op: 'add', path: '/metadata/annotations', value: {{'{key}': {author}}}}}]",
                author = format!(
                    "(request.operation == 'CREATE' ? request.userInfo.username : oldObject.metadata.annotations['{key}'])"
                )
            )}}],
        },
    });
    [policy, binding("MutatingAdmissionPolicyBinding", AUTHOR)]
}

/// Status writes by authorization, not by a list of names: writing the status of a Release or an
/// Environment needs the verb `write-status` on its `status` subresource, which each install's
/// RBAC grants to its own ServiceAccount (a Role in single-namespace mode). Any number of installs
/// coexist; a cluster admin holds every verb.
pub fn status_writers() -> [Value; 2] {
    validating(
        STATUS_WRITERS,
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": [GROUP], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
                 "resources": ["releases/status", "environments/status"]},
            ]},
            // A cluster-scoped request (an Environment's) has no `request.namespace` at all.
            "validations": [rule(
                format!(
                    "request.resource.resource == 'environments' ? \
                     authorizer.group('{GROUP}').resource('environments').subresource('status')\
                     .name(request.name).check('{WRITE_STATUS_VERB}').allowed() : \
                     authorizer.group('{GROUP}').resource('releases').subresource('status')\
                     .namespace(request.namespace).name(request.name).check('{WRITE_STATUS_VERB}').allowed()"
                ),
                format!(
                    "'the status of Environments and Releases is written by a phaseloop operator only (the verb \
                     {WRITE_STATUS_VERB} on ' + request.resource.resource + '/status, which each install grants its \
                     ServiceAccount): ' + request.userInfo.username + ' may not write it'"
                ),
            )],
        }),
    )
}

/// What an Environment's infrastructure may not hold, whoever creates it: a Service with
/// `externalIPs` (it intercepts traffic to those addresses cluster-wide, CVE-2020-8554), a claim
/// naming a PersistentVolume (`spec.volumeName`: someone else's data), and a Secret carrying its
/// data (the Environment is cluster-scoped: anyone who may read Environments would read it). The
/// operator refuses the same objects itself ([`crate::controller::environment`]), for what was
/// stored before this policy.
pub fn infrastructure() -> [Value; 2] {
    let each = |check: &str| {
        format!(
            "!has(object.spec.infrastructure) || object.spec.infrastructure.all(c, !has(c.objects) || \
             c.objects.all(o, !has(o.kind) || !has(o.apiVersion) || o.apiVersion != 'v1' || {check}))"
        )
    };
    let quoted = |s: &str| format!("'{s}'");
    validating(
        INFRASTRUCTURE,
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": [GROUP], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["environments"]},
            ]},
            "validations": [
                rule(
                    each("o.kind != 'Service' || !has(o.spec) || !has(o.spec.externalIPs)"),
                    quoted("infrastructure Services may not set spec.externalIPs: they would intercept traffic to those \
                            addresses from the whole cluster"),
                ),
                rule(
                    each("o.kind != 'PersistentVolumeClaim' || !has(o.spec) || !has(o.spec.volumeName)"),
                    quoted("infrastructure PersistentVolumeClaims may not set spec.volumeName: a claim binds to a \
                            volume by its storage class and size, never to a volume someone else named"),
                ),
                rule(
                    each("o.kind != 'Secret' || (!has(o.data) && !has(o.stringData))"),
                    quoted("an infrastructure Secret may not carry data or stringData: anyone who may read \
                            Environments would read it; declare the Secret without data and write its data into \
                            the namespace (docs/operations.md)"),
                ),
            ],
        }),
    )
}

/// An Environment's extension annotation (`phaseloop.dev/expires-at`) must be a time phaseloop
/// reads: RFC 3339 with a four-digit year and an offset (`Z` or `+02:00`), and a real date
/// (`format.datetime()` refuses February 30th). The operator reports a value stored before this
/// policy (`Expiring`/`ExtensionUnreadable`) and ignores it.
pub fn environment_expiry() -> [Value; 2] {
    let key = annotation::EXPIRES_AT;
    let value = annotation_value("object", key);
    let shape =
        r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$";
    validating(
        ENVIRONMENT_EXPIRY,
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": [GROUP], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["environments"]},
            ]},
            "validations": [rule(
                format!(
                    "!{} || ({value}.matches('{shape}') && !format.datetime().validate({value}).hasValue())",
                    has_annotation("object", key)
                ),
                format!(
                    "'{key} must be an RFC 3339 time with a four-digit year and an offset, such as \
                     2030-01-31T18:00:00Z (kubectl phaseloop env extend writes one): ' + {value} + ' is not'"
                ),
            )],
        }),
    )
}

/// Every policy file of `crds/` by its suffix (`phaseloop.dev_<suffix>.yaml`), in order.
pub fn files() -> Vec<(&'static str, [Value; 2])> {
    vec![
        ("protect-production", protect_production()),
        ("approvals", approvals()),
        ("author", author()),
        ("status-writers", status_writers()),
        ("infrastructure", infrastructure()),
        ("environment-expiry", environment_expiry()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policies_deserialize_as_their_kinds() {
        use k8s_openapi::api::admissionregistration::v1::{
            MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding, ValidatingAdmissionPolicy,
            ValidatingAdmissionPolicyBinding,
        };
        for (name, [policy, binding]) in files() {
            if policy["kind"] == "MutatingAdmissionPolicy" {
                serde_json::from_value::<MutatingAdmissionPolicy>(policy).unwrap_or_else(|e| panic!("{name}: {e}"));
                serde_json::from_value::<MutatingAdmissionPolicyBinding>(binding).unwrap();
            } else {
                serde_json::from_value::<ValidatingAdmissionPolicy>(policy).unwrap_or_else(|e| panic!("{name}: {e}"));
                serde_json::from_value::<ValidatingAdmissionPolicyBinding>(binding).unwrap();
            }
        }
    }

    #[test]
    fn an_annotation_is_present_or_absent_not_empty_or_not() {
        // Absent and empty must differ: an empty approval used to pass as "no change".
        let has = has_annotation("object", annotation::APPROVED_BY);
        assert!(has.contains("'phaseloop.dev/approved-by' in object.metadata.annotations"), "{has}");
        let policy = &approvals()[0];
        let text = policy.to_string();
        assert!(text.contains("variables.approvalSet || (variables.approvalHad && !variables.approvalHas)"));
        assert!(!text.contains("variables.after == ''"), "an empty value must never pass");
    }
}
