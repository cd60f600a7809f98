{{- define "flywheel.fullname" -}}
{{- printf "%s-flywheel" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "flywheel.labels" -}}
app.kubernetes.io/part-of: flywheel
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "flywheel.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "flywheel.secretName" -}}
{{- if .Values.secrets.create -}}{{ include "flywheel.fullname" . }}-secrets{{- else -}}{{ required "secrets.existingSecret is required when secrets.create is false" .Values.secrets.existingSecret }}{{- end -}}
{{- end -}}

{{- define "flywheel.kafkaBootstrap" -}}
{{- if .Values.kafka.strimzi.enabled -}}{{ include "flywheel.fullname" . }}-kafka-kafka-bootstrap:9092{{- else -}}{{ .Values.kafka.bootstrapServers }}{{- end -}}
{{- end -}}
