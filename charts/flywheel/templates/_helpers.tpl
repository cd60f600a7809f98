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

{{/* A Service's ports: each of the service's ports by its role, and Triton's metrics port. */}}
{{- define "flywheel.servicePorts" -}}
{{- range $role, $port := .svc.ports }}
- name: {{ $role }}
  port: {{ $port }}
  targetPort: {{ $role }}
  protocol: TCP
{{- end }}
{{- if and (eq .name "modelserver") (eq .svc.engine "triton") }}
- name: metrics
  port: 8002
  targetPort: metrics
  protocol: TCP
{{- end }}
{{- end -}}

{{/* How the gateway finds the model servers (services.gateway.modelserverDiscovery): headless | service. */}}
{{- define "flywheel.modelserverDiscovery" -}}
{{- .Values.services.gateway.modelserverDiscovery | default "headless" -}}
{{- end -}}

{{/* The model server's address for the gateway: the headless Service (every Ready pod) or the ClusterIP one. */}}
{{- define "flywheel.modelserverAddr" -}}
{{- $suffix := ternary "-pods" "" (eq (include "flywheel.modelserverDiscovery" .) "headless") -}}
{{ include "flywheel.fullname" . }}-modelserver{{ $suffix }}:{{ .Values.services.modelserver.ports.http }}
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
{{- $onS3 := list -}}
{{- range $store := list "objectStore" "lake" "modelRepository" -}}
{{- $v := index $.Values $store -}}
{{- if eq $v.type "s3" -}}
{{- $onS3 = append $onS3 (printf "%s.type=s3" $store) -}}
{{- if not $v.bucket -}}
{{- fail (printf "%s.type=s3 needs %s.bucket: the bucket (created when missing) of s3://<bucket>/%s." $store $store ($v.prefix | default "")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $onS3 (not .Values.s3.existingSecret) (not .Values.s3.bundled.enabled) -}}
{{- fail (printf "%s needs S3 credentials: s3.existingSecret (a Secret with the keys s3.accessKeyIdKey and s3.secretAccessKeyKey), or s3.bundled.enabled=true (the chart's own S3 server, with generated keys)." (join ", " $onS3)) -}}
{{- end -}}
{{- if and (eq .Values.modelRepository.type "s3") (eq .Values.services.modelserver.engine "triton") -}}
{{- fail "services.modelserver.engine=triton with modelRepository.type=s3 is not supported: the trainer publishes each version's files, config.pbtxt inside the version folder, then a manifest of their sha256, which Flywheel's model server checks before it loads a version. Triton reads <model>/config.pbtxt (absent there) and checks no manifest: it would load a version whose upload has not finished, or one that does not match it. Use engine flywheel, or modelRepository.type=pvc." -}}
{{- end -}}
{{- if and .Values.tls.enabled (eq .Values.services.modelserver.engine "triton") -}}
{{- fail "tls.enabled with services.modelserver.engine=triton is not supported: the chart does not configure Triton's TLS, and the gateway would call it over HTTPS. Use engine flywheel, or tls.enabled=false." -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.enabled needs tls.secretName: a Secret with tls.crt, tls.key and ca.crt (a cert-manager Certificate's)." -}}
{{- end -}}
{{- if and (not .Values.postgresql.enabled) .Values.secrets.create (not .Values.secrets.databaseUrl) -}}
{{- fail "postgresql.enabled=false needs secrets.databaseUrl (postgresql+psycopg://user:password@host:5432/db) or secrets.existingSecret." -}}
{{- end -}}
{{- $r := .Values.rollout -}}
{{- if le (int $r.terminationGracePeriodSeconds) (add $r.preStopSleepSeconds $r.drainSeconds | int) -}}
{{- fail (printf "rollout.terminationGracePeriodSeconds (%v) must exceed rollout.preStopSleepSeconds + rollout.drainSeconds (%v): the kubelet would kill a pod in the middle of its drain. Raise it, or shorten the drain." $r.terminationGracePeriodSeconds (add $r.preStopSleepSeconds $r.drainSeconds)) -}}
{{- end -}}
{{- range $name, $svc := .Values.services -}}
{{- $min := include "flywheel.minReplicas" (dict "name" $name "svc" $svc "root" $) | int -}}
{{- $floor := $svc.pdb.minAvailable -}}
{{- if and $svc.enabled (or (kindIs "float64" $floor) (kindIs "int64" $floor) (kindIs "int" $floor)) (gt $min 1) (ge (int $floor) $min) -}}
{{- fail (printf "services.%s.pdb.minAvailable (%v) must be below its fewest replicas (%d): no pod could ever be evicted, so node drains would hang." $name $svc.pdb.minAvailable $min) -}}
{{- end -}}
{{- end -}}
{{- $ma := .Values.metricsAdapter -}}
{{- if $ma.enabled -}}
{{- if eq .Values.services.modelserver.engine "triton" -}}
{{- fail "metricsAdapter.enabled with services.modelserver.engine=triton is not supported: the adapter's rules read the Flywheel model server's metrics (flywheel_modelserver_*), which Triton does not export. Use engine flywheel, or metricsAdapter.enabled=false and an adapter configured for Triton's nv_inference_* metrics." -}}
{{- end -}}
{{- $served := list "flywheel_modelserver_queue_seconds" "flywheel_modelserver_requests_per_second" -}}
{{- $asc := .Values.services.modelserver.autoscaling -}}
{{- if and $asc.enabled (not (has $asc.metricName $served)) -}}
{{- fail (printf "services.modelserver.autoscaling.metricName %q is not served by metricsAdapter: use one of %s." $asc.metricName (join ", " $served)) -}}
{{- end -}}
{{- if and .Values.tls.enabled (not $ma.prometheusUrl) -}}
{{- fail "metricsAdapter.enabled with tls.enabled needs metricsAdapter.prometheusUrl: the chart's own Prometheus scrapes the model servers over plain HTTP. Point the adapter at a Prometheus that scrapes them over TLS." -}}
{{- end -}}
{{- if not (regexMatch "^[0-9]+[smh]$" (toString $ma.rateWindow)) -}}
{{- fail (printf "metricsAdapter.rateWindow %q must be a Prometheus duration such as 30s, 1m or 5m." (toString $ma.rateWindow)) -}}
{{- end -}}
{{- end -}}
{{- if eq .Values.services.modelserver.engine "torchserve" -}}
{{- fail "services.modelserver.engine=torchserve is not supported: TorchServe reads .mar archives, not the Triton-layout model repository, and does not speak KServe v2, which the gateway sends. Use engine flywheel or triton." -}}
{{- end -}}
{{- end -}}

{{/* The fewest replicas a service runs with: its HPA's or KEDA's minimum when it scales, else `replicas`. */}}
{{- define "flywheel.minReplicas" -}}
{{- $svc := .svc -}}
{{- if and $svc.autoscaling $svc.autoscaling.enabled -}}
{{- $svc.autoscaling.minReplicas -}}
{{- else if and .root.Values.keda.enabled (has .name (list "ingest" "lake" "monitor")) -}}
{{- .root.Values.keda.minReplicas -}}
{{- else -}}
{{- $svc.replicas -}}
{{- end -}}
{{- end -}}

{{/*
Who calls whom: the same matrix as the local runner (services/devstack/stack.py, ServiceSpec.callers and
.identity; tests/deploy checks they agree). callers: the identities a service admits (their token digests
are its FLYWHEEL_TRUSTED_CALLERS); identity: whose token the service presents when it calls another.
*/}}
{{- define "flywheel.identities" -}}
operator gateway trainer labeler
{{- end -}}

{{- define "flywheel.callers" -}}
{{- $matrix := dict "modelserver" "gateway operator" "ingest" "labeler operator" "lake" "trainer operator" "trainer" "operator" "gateway" "" "monitor" "operator" -}}
{{- index $matrix . -}}
{{- end -}}

{{- define "flywheel.identity" -}}
{{- $identities := dict "gateway" "gateway" "trainer" "trainer" -}}
{{- index $identities . | default "" -}}
{{- end -}}

{{/* The pod's Kafka client settings (SECURITY.md, Kafka): env entries, the password from its Secret. */}}
{{- define "flywheel.kafkaEnv" -}}
{{- $k := .Values.kafka.security -}}
{{- if ne $k.protocol "PLAINTEXT" }}
- name: FLYWHEEL_KAFKA_SECURITY_PROTOCOL
  value: {{ $k.protocol | quote }}
{{- end }}
{{- if hasPrefix "SASL_" $k.protocol }}
- name: FLYWHEEL_KAFKA_SASL_MECHANISM
  value: {{ required "kafka.security.sasl.mechanism is required with a SASL protocol" $k.sasl.mechanism | quote }}
- name: FLYWHEEL_KAFKA_SASL_USERNAME
  value: {{ required "kafka.security.sasl.username is required with a SASL protocol" $k.sasl.username | quote }}
- name: FLYWHEEL_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.security.sasl.passwordSecret.name (a Secret holding the password) is required with a SASL protocol" $k.sasl.passwordSecret.name }}
      key: {{ $k.sasl.passwordSecret.key }}
{{- end }}
{{- if and (hasSuffix "SSL" $k.protocol) $k.ssl.secretName }}
{{- if $k.ssl.caKey }}
- name: FLYWHEEL_KAFKA_SSL_CA_FILE
  value: /etc/flywheel/kafka-tls/{{ $k.ssl.caKey }}
{{- end }}
{{- if and $k.ssl.certKey $k.ssl.keyKey }}
- name: FLYWHEEL_KAFKA_SSL_CERT_FILE
  value: /etc/flywheel/kafka-tls/{{ $k.ssl.certKey }}
- name: FLYWHEEL_KAFKA_SSL_KEY_FILE
  value: /etc/flywheel/kafka-tls/{{ $k.ssl.keyKey }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "flywheel.kafkaTlsMounted" -}}
{{- if and (hasSuffix "SSL" .Values.kafka.security.protocol) .Values.kafka.security.ssl.secretName -}}true{{- end -}}
{{- end -}}

{{/* The database address: given, or the bundled PostgreSQL's Service. */}}
{{- define "flywheel.postgresqlHost" -}}
{{ include "flywheel.fullname" . }}-postgresql
{{- end -}}


{{/* A store's URL (objectStore, lake, modelRepository): s3://<bucket>[/<prefix>], or "" when not on s3. */}}
{{- define "flywheel.s3Url" -}}
{{- $v := index .root.Values .store -}}
{{- if eq $v.type "s3" -}}
s3://{{ $v.bucket }}{{ with trimAll "/" ($v.prefix | default "") }}/{{ . }}{{ end }}
{{- end -}}
{{- end -}}

{{/* "true" when this service uses a store on s3 (then its pod gets the AWS_* settings). */}}
{{- define "flywheel.usesS3" -}}
{{- $v := .root.Values -}}
{{- $stores := dict "ingest" (list "objectStore") "lake" (list "lake") "monitor" (list "lake") "modelserver" (list "modelRepository") "trainer" (list "objectStore" "lake" "modelRepository") "test-smoke" (list "lake" "modelRepository") -}}
{{- range $store := (index $stores .name | default list) -}}
{{- if eq (index $v $store).type "s3" }}true{{ end -}}
{{- end -}}
{{- end -}}

{{/* The S3 server's address: s3.endpoint, else the bundled server's Service, else "" (AWS itself). */}}
{{- define "flywheel.s3Endpoint" -}}
{{- if .Values.s3.endpoint -}}
{{ .Values.s3.endpoint }}
{{- else if .Values.s3.bundled.enabled -}}
http://{{ include "flywheel.fullname" . }}-s3:7070
{{- end -}}
{{- end -}}

{{/* The Secret holding the S3 keys: s3.existingSecret, else the bundled server's generated one. */}}
{{- define "flywheel.s3SecretName" -}}
{{- .Values.s3.existingSecret | default (printf "%s-s3" (include "flywheel.fullname" .)) -}}
{{- end -}}

{{/* The S3 keys as env entries, by reference only: no key value is ever rendered. */}}
{{- define "flywheel.s3KeyEnv" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "flywheel.s3SecretName" . }}
      key: {{ .Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "flywheel.s3SecretName" . }}
      key: {{ .Values.s3.secretAccessKeyKey }}
{{- end -}}
