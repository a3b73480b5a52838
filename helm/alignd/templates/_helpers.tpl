{{/* Names, labels and the few derived values every template shares. */}}

{{- define "alignd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: "<release>-alignd", or just "<release>" when that already contains the chart name. */}}
{{- define "alignd.fullname" -}}
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

{{- define "alignd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "alignd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "alignd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "alignd.labels" -}}
helm.sh/chart: {{ include "alignd.chart" . }}
{{ include "alignd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: alignd
{{- end }}

{{/* The API server's pods (and the objects that select them). */}}
{{- define "alignd.apiSelectorLabels" -}}
{{ include "alignd.selectorLabels" . }}
app.kubernetes.io/component: api
{{- end }}

{{- define "alignd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "alignd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Empty when trainer pods should run under the namespace's default account. */}}
{{- define "alignd.trainerServiceAccountName" -}}
{{- if .Values.trainer.serviceAccount.create }}
{{- default (printf "%s-trainer" (include "alignd.fullname" .) | trunc 63 | trimSuffix "-") .Values.trainer.serviceAccount.name }}
{{- else }}
{{- .Values.trainer.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding credentials: yours (existingSecret) or the release-named one. */}}
{{- define "alignd.secretName" -}}
{{- default (include "alignd.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "alignd.dataClaimName" -}}
{{- default (printf "%s-data" (include "alignd.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest pins the image. */}}
{{- define "alignd.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "alignd.image" -}}
{{- include "alignd.imageRef" (dict "image" .Values.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{- define "alignd.trainerImage" -}}
{{- include "alignd.imageRef" (dict "image" .Values.trainer.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{/* Where migrations run: a hook Job needs the database URL in a Secret that exists before install
(existingSecret) and a database outside the pod; otherwise the API pods' init container runs them. */}}
{{- define "alignd.migrationsMode" -}}
{{- if not .Values.migrations.enabled }}
{{- print "none" }}
{{- else if or (eq .Values.persistence.mode "embedded") .Values.secret.create }}
{{- print "initContainer" }}
{{- else }}
{{- print .Values.migrations.mode }}
{{- end }}
{{- end }}

{{/* The API's S3 key variables (none with s3.auth=workloadIdentity). */}}
{{- define "alignd.usesS3Keys" -}}
{{- if and (eq .Values.store "s3") (eq .Values.s3.auth "keys") }}true{{ end }}
{{- end }}

{{- define "alignd.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "alignd.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}
{{- end }}

{{/* Resource quantities as a JSON object of strings (values may write cpu: 2 as a number). */}}
{{- define "alignd.quantitiesJson" -}}
{{- $quantities := dict }}
{{- range $name, $value := . }}
{{- $_ := set $quantities $name (toString $value) }}
{{- end }}
{{- toJson $quantities }}
{{- end }}

{{/* GPU profiles as the JSON object ALIGND_K8S_GPU_PROFILES expects (alignd.config.GpuProfile). */}}
{{- define "alignd.gpuProfilesJson" -}}
{{- $profiles := dict }}
{{- range $name, $profile := .Values.trainer.gpuProfiles }}
{{- $_ := set $profiles $name (dict
      "node_selector" ($profile.nodeSelector | default dict)
      "tolerations" ($profile.tolerations | default list)
      "resource_name" ($profile.resourceName | default "nvidia.com/gpu")
      "requests" (include "alignd.quantitiesJson" ($profile.requests | default dict) | fromJson)) }}
{{- end }}
{{- toJson $profiles }}
{{- end }}

{{/* Combinations the schema cannot express; each fails the install with what to change. */}}
{{- define "alignd.validate" -}}
{{- $embedded := eq .Values.persistence.mode "embedded" }}
{{- if and $embedded (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "persistence.mode=embedded keeps SQLite on one volume and runs exactly one replica, but replicaCount=%d: set replicaCount=1, or use persistence.mode=external (PostgreSQL) for more replicas" (int .Values.replicaCount)) }}
{{- end }}
{{- if and (eq .Values.store "local") (not $embedded) }}
{{- fail "store=local keeps objects on the embedded volume: set persistence.mode=embedded (quick start, one replica) or use store=s3" }}
{{- end }}
{{- if and .Values.secret.create .Values.existingSecret }}
{{- fail "set either existingSecret (a Secret you manage) or secret.create=true (the chart makes one), not both" }}
{{- end }}
{{- if .Values.secret.create }}
{{- if and (not $embedded) (not .Values.secret.databaseUrl) }}
{{- fail "secret.create=true with persistence.mode=external needs secret.databaseUrl (a PostgreSQL URL), or use existingSecret" }}
{{- end }}
{{- if and (include "alignd.usesS3Keys" .) (not (and .Values.secret.s3AccessKey .Values.secret.s3SecretKey)) }}
{{- fail "secret.create=true with store=s3 needs secret.s3AccessKey and secret.s3SecretKey, s3.auth=workloadIdentity, or existingSecret" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels the Kubernetes launcher puts on this release's trainer pods (alignd/launchers/k8s_manifests.py):
ALIGND_K8S_RELEASE is the release name, so another release's trainers in the namespace are not selected. */}}
{{- define "alignd.trainerPodLabels" -}}
app.kubernetes.io/managed-by: alignd
app.kubernetes.io/component: trainer
alignd.dev/release: {{ .Release.Name | quote }}
{{- end }}
