{{/* Chart name, overridable. */}}
{{- define "kitaru-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-kitaru-operator, or the release name alone when it already
contains the chart name. Cluster-scoped objects (ClusterRoles, policies) carry it,
so two releases in one cluster never collide.
*/}}
{{- define "kitaru-operator.fullname" -}}
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

{{- define "kitaru-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (Deployment selectors are immutable). */}}
{{- define "kitaru-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kitaru-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kitaru-operator.labels" -}}
helm.sh/chart: {{ include "kitaru-operator.chart" . }}
{{ include "kitaru-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kitaru
{{- end }}

{{- define "kitaru-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kitaru-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image: repository@digest when a digest is set, else repository:tag (default appVersion). */}}
{{- define "kitaru-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The default runner image, pinned like the operator's: repository@digest, else :tag. */}}
{{- define "kitaru-operator.runnerImage" -}}
{{- with .Values.runner.image }}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (default $.Chart.AppVersion .tag) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The namespaces the operator watches when not cluster-wide, as a JSON list. */}}
{{- define "kitaru-operator.watchNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- toJson .Values.watch.namespaces }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/* Prefix of the user-facing ClusterRoles: kitaru -> kitaru-producer. */}}
{{- define "kitaru-operator.userRolePrefix" -}}
{{- default .Release.Name .Values.rbac.userRoles.namePrefix }}
{{- end }}

{{/*
Bind a ClusterRole to the operator's ServiceAccount where it watches: one
ClusterRoleBinding when cluster-wide, else a RoleBinding per watched namespace
(a RoleBinding may reference a ClusterRole: the rules apply in that namespace only).
Call with (dict "ctx" $ "role" "<suffix>").
*/}}
{{- define "kitaru-operator.bindWatched" -}}
{{- $ctx := .ctx }}
{{- $name := printf "%s-%s" (include "kitaru-operator.fullname" $ctx) .role }}
{{- if $ctx.Values.watch.allNamespaces }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $name }}
  labels:
    {{- include "kitaru-operator.labels" $ctx | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ include "kitaru-operator.serviceAccountName" $ctx }}
    namespace: {{ $ctx.Release.Namespace }}
{{- else }}
{{- range $ns := include "kitaru-operator.watchNamespaces" $ctx | fromJsonArray }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}
  namespace: {{ $ns }}
  labels:
    {{- include "kitaru-operator.labels" $ctx | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ include "kitaru-operator.serviceAccountName" $ctx }}
    namespace: {{ $ctx.Release.Namespace }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A retention bound as the operator's flag takes it: the number, or "none" for null
(0 is a number: delete at once).
*/}}
{{- define "kitaru-operator.bound" -}}
{{- if kindIs "invalid" . }}none{{ else }}{{ int64 . }}{{ end }}
{{- end }}

{{/* The dashboard's pods: a name of their own, so the operator's selectors never match them. */}}
{{- define "kitaru-operator.dashboardSelectorLabels" -}}
app.kubernetes.io/name: kitaru-dashboard
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The store's objects (Deployment, Service, PVC): <fullname>-store. */}}
{{- define "kitaru-operator.storeName" -}}
{{- printf "%s-store" (include "kitaru-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The store's pods: a name of their own, so the operator's selectors never match them. */}}
{{- define "kitaru-operator.storeSelectorLabels" -}}
app.kubernetes.io/name: kitaru-store
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The Secret with the store's credentials (keys AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY): store.secretRef, else the one the chart makes with
store.deploy, else none (the default credential chain: IRSA, workload identity, ...).
*/}}
{{- define "kitaru-operator.storeSecret" -}}
{{- if .Values.store.secretRef }}
{{- .Values.store.secretRef }}
{{- else if .Values.store.deploy }}
{{- printf "%s-credentials" (include "kitaru-operator.storeName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The store's URL: store.endpoint, else the Service of store.deploy, else none. */}}
{{- define "kitaru-operator.storeEndpoint" -}}
{{- if .Values.store.endpoint }}
{{- .Values.store.endpoint }}
{{- else if .Values.store.deploy }}
{{- printf "http://%s.%s.svc:%d" (include "kitaru-operator.storeName" .) .Release.Namespace (int .Values.store.service.port) }}
{{- end }}
{{- end }}

{{/* The store's image: repository@digest when a digest is set, else repository:tag. */}}
{{- define "kitaru-operator.storeImage" -}}
{{- if .Values.store.image.digest }}
{{- printf "%s@%s" .Values.store.image.repository .Values.store.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.store.image.repository .Values.store.image.tag }}
{{- end }}
{{- end }}

{{/*
The operator's KITARU_STORE_* environment, when a store is configured: where it is,
the bucket and key prefix of the run data, and the credentials from their Secret.
*/}}
{{- define "kitaru-operator.storeEnv" -}}
{{- $endpoint := include "kitaru-operator.storeEndpoint" . }}
{{- $secret := include "kitaru-operator.storeSecret" . }}
{{- if and $secret (not $endpoint) }}
{{- fail "store.secretRef names credentials, but no store is configured: set store.endpoint, or store.deploy=true" }}
{{- end }}
{{- if $endpoint }}
- name: KITARU_STORE_ENDPOINT
  value: {{ $endpoint | quote }}
- name: KITARU_STORE_BUCKET
  value: {{ .Values.store.bucket | quote }}
- name: KITARU_STORE_PREFIX
  value: {{ .Values.store.prefix | quote }}
- name: KITARU_STORE_REGION
  value: {{ .Values.store.region | quote }}
{{- if $secret }}
- name: KITARU_STORE_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: AWS_ACCESS_KEY_ID
- name: KITARU_STORE_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- end }}
{{- end }}
