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

{{- define "flywheel.image" -}}
{{ .root.Values.image.registry }}/flywheel-{{ .name }}:{{ .root.Values.image.tag }}
{{- end -}}

{{- define "flywheel.dataClaim" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-data" (include "flywheel.fullname" .)) -}}
{{- end -}}

{{/* Choices the chart cannot deliver yet fail here, at render time, with the reason and the way out. */}}
{{- define "flywheel.validate" -}}
{{- if eq .Values.modelRepository.type "s3" -}}
{{- fail "modelRepository.type=s3 is not available yet: the services read the model repository from a file system. Use modelRepository.type=pvc (the shared volume, persistence.*)." -}}
{{- end -}}
{{- if eq .Values.services.modelserver.engine "torchserve" -}}
{{- fail "services.modelserver.engine=torchserve is not supported: TorchServe reads .mar archives, not the Triton-layout model repository, and does not speak KServe v2, which the gateway sends. Use engine flywheel or triton." -}}
{{- end -}}
{{- end -}}
