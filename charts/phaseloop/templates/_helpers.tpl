{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "phaseloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it already contains the chart name, else "<release>-<chart>". */}}
{{- define "phaseloop.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "phaseloop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "phaseloop.labels" -}}
helm.sh/chart: {{ include "phaseloop.chart" . }}
{{ include "phaseloop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: phaseloop
{{- end }}

{{/* Labels selecting the operator pods (immutable in the Deployment: never change them). */}}
{{- define "phaseloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "phaseloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "phaseloop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "phaseloop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "phaseloop.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* "true" when leader election is on: several replicas, or forced by leaderElection.enabled. */}}
{{- define "phaseloop.leaderElection" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.leaderElection.enabled }}true{{ end }}
{{- end }}

{{/*
Security context of every container of the chart: passes the `restricted` Pod Security Standard.
*/}}
{{- define "phaseloop.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "phaseloop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
RBAC rules for Releases. Everything here is namespaced, so the same rules serve the ClusterRole
(scope "cluster") and the per-namespace Roles (scope "namespace"). Every write is server-side
apply, i.e. the `patch` verb; an apply that creates an object is authorized as `create` as well.
*/}}
{{- define "phaseloop.rules.release" -}}
# Releases are the operator's own kind: watched (cache), annotations patched (consumed
# promote/abort/revert/wake requests), created when an Environment branches from a parent (the
# parent's Live Releases are applied into the branch's namespace) and for promotion requests
# (`promotion.mode: Automatic`), and a request that has not started deleted when a newer version
# supersedes it.
- apiGroups: ["phaseloop.dev"]
  resources: ["releases"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Release status (phase, steps, analysis, scaling memory) is written with server-side apply;
# write-status is what the admission policy phaseloop.dev-status-writers asks of whoever writes it
# (each install grants it to its own ServiceAccount, so installs side by side never refuse each
# other).
- apiGroups: ["phaseloop.dev"]
  resources: ["releases/status"]
  verbs: ["get", "patch", "update", "write-status"]
# Children carry owner references with blockOwnerDeletion to their Release; the API server requires
# `update` on the owner's finalizers subresource for that (OwnerReferencesPermissionEnforcement).
- apiGroups: ["phaseloop.dev"]
  resources: ["releases/finalizers"]
  verbs: ["update"]
# Release workloads: one Deployment per version (<app>-<version>), applied whole with its replicas
# (rollout split, autoscaling, sleep); finished Releases' Deployments beyond the last 3 are
# deleted. Also watched (owned children: their status is the rollout's readiness).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# The app Service <app> and the preview Service <app>-preview (traffic switch of rollouts).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Test Jobs of Releases (one per attempt) and the seed Job of Environments.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Conflict detection only: an HPA (or KEDA's) targeting an app's Deployment stops phaseloop from
# scaling it. Never written.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch"]
# Events on Environments and Releases (every phase transition, scaling, warnings), core group.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# The same Events through events.k8s.io/v1, which kube-rs's event recorder writes (patch: a
# repeated event increases the series count of the existing one).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.trafficRouting.gatewayAPI }}
# Gateway API routing: the HTTPRoutes Releases name are watched (a change wakes their Releases) and
# the backendRefs of the named rules patched (a JSON patch with a resourceVersion test). Never
# created or deleted: a route is its owner's.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "patch"]
# A step gives the canary more of a route's traffic only once its pods are Ready behind the canary
# Service, read from that Service's EndpointSlices (a LIST while a routed Release rolls out).
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list"]
{{- end }}
{{- end }}

{{/*
RBAC rules for Environments (cluster scope only): cluster-scoped Environments and Namespaces, and
what an Environment puts into its namespace.
*/}}
{{- define "phaseloop.rules.environment" -}}
# Environments are the operator's own kind: watched, finalizer and annotation patches (wake,
# expiry), self-deletion at the end of a ttl, and creation of the ephemeral `test` Environment a
# Release with testEnvironment runs its tests in.
- apiGroups: ["phaseloop.dev"]
  resources: ["environments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Environment status (phase, components, branch snapshot, slept replicas), server-side apply;
# write-status is what the admission policy phaseloop.dev-status-writers asks of whoever writes it.
- apiGroups: ["phaseloop.dev"]
  resources: ["environments/status"]
  verbs: ["get", "patch", "update", "write-status"]
# The namespace of an Environment carries an owner reference with blockOwnerDeletion to it.
- apiGroups: ["phaseloop.dev"]
  resources: ["environments/finalizers"]
  verbs: ["update"]
# Environments own namespaces: created and labelled, watched, deleted with the Environment (only
# when the namespace carries that Environment's label).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The Environment's quota and container defaults (spec.quota, spec.defaults); deleted when removed.
- apiGroups: [""]
  resources: ["resourcequotas", "limitranges"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# spec.isolation: the NetworkPolicy of the namespace; deleted when isolation is removed.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The Environment controller watches managed StatefulSets (readiness of infrastructure components)
# whatever infrastructure.kinds allows; writing them needs apps/statefulsets in infrastructure.kinds.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch"]
{{- range .Values.infrastructure.kinds }}
# Environment infrastructure (values infrastructure.kinds): users declare these objects in
# spec.infrastructure and the operator applies, reads back (readiness) and prunes them.
- apiGroups: [{{ .apiGroup | quote }}]
  resources: {{ toJson .resources }}
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
{{- end }}

{{/*
The infrastructure allow-list as the operator reads it: resource.group, comma-separated.
*/}}
{{- define "phaseloop.infrastructureKinds" -}}
{{- $kinds := list }}
{{- range .Values.infrastructure.kinds }}
{{- $group := .apiGroup }}
{{- range .resources }}
{{- $kinds = append $kinds (ternary . (printf "%s.%s" . $group) (eq $group "")) }}
{{- end }}
{{- end }}
{{- join "," $kinds }}
{{- end }}

{{/* The RoleBinding of single-namespace mode (its finalizer keeps the rights while the operator lets go). */}}
{{- define "phaseloop.roleBinding" -}}
{{ include "phaseloop.fullname" . }}
{{- end }}

{{/*
What this install reconciles, as the operator's environment (its Deployment and the uninstall
hook): its instance id, and in single-namespace mode the namespace and the RoleBinding there.
*/}}
{{- define "phaseloop.scopeEnv" -}}
{{- with .Values.instanceId }}
# Only the Releases and Environments labelled phaseloop.dev/instance={{ . }}.
- name: PHASELOOP_INSTANCE_ID
  value: {{ . | quote }}
{{- end }}
{{- if eq .Values.rbac.scope "namespace" }}
# Single-namespace mode: only the Releases of this namespace, where the RoleBinding grants access.
- name: PHASELOOP_WATCH_NAMESPACE
  value: {{ first .Values.rbac.namespaces | quote }}
- name: PHASELOOP_ROLE_BINDING
  value: {{ include "phaseloop.roleBinding" . | quote }}
{{- end }}
{{- end }}
