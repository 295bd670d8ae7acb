{{/* The release's name for every object: <release>-verdict, or <release> when it says verdict already. */}}
{{- define "verdict.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "verdict.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "verdict.labels" -}}
{{ include "verdict.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* A path in the image's bundle, unless absolute. */}}
{{- define "verdict.inBundle" -}}
{{- if hasPrefix "/" .path -}}{{ .path }}{{- else -}}{{ printf "%s/%s" (trimSuffix "/" .bundle) .path }}{{- end -}}
{{- end -}}

{{/* A rule file's ConfigMap key: its path with / as __ (keys cannot hold /). */}}
{{- define "verdict.ruleKey" -}}
{{- . | replace "/" "__" -}}
{{- end -}}

{{- define "verdict.adminSecret" -}}
{{- if .Values.admin.existingSecret -}}{{ .Values.admin.existingSecret }}{{- else -}}{{ include "verdict.fullname" . }}-admin{{- end -}}
{{- end -}}
