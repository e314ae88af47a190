{{/*
Helpers for the ssd300-triton chart. Every helper is namespaced `ssd300-triton.` so a parent
chart can include this one without name clashes.
*/}}

{{/* Chart name, overridable; 63 characters is the DNS label limit of object names. */}}
{{- define "ssd300-triton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* `<release>-<chart>` unless the release name already contains the chart name. */}}
{{- define "ssd300-triton.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's object name: `<fullname>-<suffix>`, shortened to fit the 63-character limit. */}}
{{- define "ssd300-triton.componentName" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- printf "%s-%s" (include "ssd300-triton.fullname" $root | trunc (int (sub 62 (len $suffix)))) $suffix | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object (app.kubernetes.io recommended set). */}}
{{- define "ssd300-triton.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ssd300-triton.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ssd300-triton
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Immutable selector labels; a component label is added per workload. */}}
{{- define "ssd300-triton.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ssd300-triton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector of the server pods only (the load-test pods share name/instance labels). */}}
{{- define "ssd300-triton.serverSelectorLabels" -}}
{{ include "ssd300-triton.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{/* commonAnnotations as a block, for objects that have no other annotations. */}}
{{- define "ssd300-triton.annotations" -}}
{{- with .Values.commonAnnotations -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{- define "ssd300-triton.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ssd300-triton.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* `repository@digest` when a digest is pinned, else `repository:tag` (tag defaults to appVersion). */}}
{{- define "ssd300-triton.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The load-test image is built next to the serving image (Dockerfile target `loadtest`). */}}
{{- define "ssd300-triton.loadTestImage" -}}
{{- $repository := default (printf "%s-loadtest" .Values.image.repository) .Values.loadTest.image.repository -}}
{{- printf "%s:%s" $repository (default (default .Chart.AppVersion .Values.image.tag) .Values.loadTest.image.tag) -}}
{{- end -}}

{{- define "ssd300-triton.adminSecretName" -}}
{{- default (include "ssd300-triton.componentName" (list . "admin")) .Values.adminApi.existingSecret -}}
{{- end -}}

{{/* Path tritonserver reads the repository from, per modelRepository.source. */}}
{{- define "ssd300-triton.modelRepositoryPath" -}}
{{- if eq .Values.modelRepository.source "image" -}}
{{- .Values.modelRepository.imagePath -}}
{{- else -}}
{{- .Values.modelRepository.mountPath -}}
{{- end -}}
{{- end -}}

{{/*
tritonserver flags as a YAML list. `none` control mode: the pod serves exactly the models it
started with (a model changes by rolling out pods, never by the repository API).
The restricted-API flags are added by the image's entrypoint from TRITON_ADMIN_KEY.
Keep these in step with the CMD of deploy/Dockerfile (tests/test_deploy.py compares them).
*/}}
{{- define "ssd300-triton.serverArgs" -}}
- {{ printf "--model-repository=%s" (include "ssd300-triton.modelRepositoryPath" .) | quote }}
- "--model-control-mode=none"
- "--strict-readiness=true"
- {{ printf "--exit-timeout-secs=%d" (int .Values.server.exitTimeoutSeconds) | quote }}
- {{ printf "--http-port=%d" (int .Values.server.ports.http) | quote }}
- {{ printf "--grpc-port=%d" (int .Values.server.ports.grpc) | quote }}
- {{ printf "--metrics-port=%d" (int .Values.server.ports.metrics) | quote }}
{{- range $gpu := until (int .Values.gpu.count) }}
- {{ printf "--cuda-memory-pool-byte-size=%d:%d" $gpu (int64 $.Values.server.cudaMemoryPoolByteSize) | quote }}
{{- end }}
- {{ printf "--backend-config=python,shm-default-byte-size=%d" (int64 .Values.server.pythonShm.defaultByteSize) | quote }}
- {{ printf "--backend-config=python,shm-growth-byte-size=%d" (int64 .Values.server.pythonShm.growthByteSize) | quote }}
- {{ printf "--log-verbose=%d" (int .Values.server.logVerbose) | quote }}
{{- if eq .Values.model.engine "onnx" }}
- "--model-config-name=onnx"
{{- end }}
{{- with .Values.server.grpcTls }}
{{- if .enabled }}
- "--grpc-use-ssl=true"
- {{ printf "--grpc-server-cert=%s/tls.crt" .mountPath | quote }}
- {{ printf "--grpc-server-key=%s/tls.key" .mountPath | quote }}
{{- if .mutual }}
- "--grpc-use-ssl-mutual=true"
- {{ printf "--grpc-root-cert=%s/ca.crt" .mountPath | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- range .Values.server.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Where the load test sends requests: this release's Service, on the protocol's port. */}}
{{- define "ssd300-triton.loadTestHost" -}}
{{- if .Values.loadTest.host -}}
{{- .Values.loadTest.host -}}
{{- else if eq .Values.loadTest.protocol "http" -}}
{{- printf "http://%s.%s.svc:%d" (include "ssd300-triton.fullname" .) .Release.Namespace (int .Values.service.ports.http) -}}
{{- else -}}
{{- printf "%s%s.%s.svc:%d" (ternary "grpcs://" "" .Values.server.grpcTls.enabled) (include "ssd300-triton.fullname" .) .Release.Namespace (int .Values.service.ports.grpc) -}}
{{- end -}}
{{- end -}}

{{/*
Checks that span several values (values.schema.json covers single values). All problems are
reported at once, one per line, so a bad values file is fixed in one round.
*/}}
{{- define "ssd300-triton.validateValues" -}}
{{- $messages := list -}}
{{- if and .Values.server.grpcTls.enabled (not .Values.server.grpcTls.secretName) -}}
{{- $messages = append $messages "server.grpcTls.secretName must name the Secret with tls.crt and tls.key when server.grpcTls.enabled is true." -}}
{{- end -}}
{{- if not .Values.image.repository -}}
{{- $messages = append $messages "image.repository must be set: push the image built from deploy/Dockerfile and name it here." -}}
{{- end -}}
{{- if lt (int .Values.replicaCount) 0 -}}
{{- $messages = append $messages (printf "replicaCount must be 0 or more (got %d)." (int .Values.replicaCount)) -}}
{{- end -}}
{{- $needed := add (int .Values.preStopSleepSeconds) (int .Values.server.exitTimeoutSeconds) -}}
{{- if le (int .Values.terminationGracePeriodSeconds) $needed -}}
{{- $messages = append $messages (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds (%d) + server.exitTimeoutSeconds (%d) = %d, or in-flight requests are killed before the server finishes them." (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds) (int .Values.server.exitTimeoutSeconds) $needed) -}}
{{- end -}}
{{- if and (eq .Values.modelRepository.source "pvc") (not .Values.modelRepository.pvc.claimName) -}}
{{- $messages = append $messages "modelRepository.pvc.claimName must be set when modelRepository.source is pvc." -}}
{{- end -}}
{{- if and (eq .Values.modelRepository.source "objectStorage") (not .Values.modelRepository.objectStorage.uri) -}}
{{- $messages = append $messages "modelRepository.objectStorage.uri must be set when modelRepository.source is objectStorage." -}}
{{- end -}}
{{- if and (eq .Values.model.engine "onnx") (eq .Values.modelRepository.source "objectStorage") (has "--exclude=/*/configs/**" .Values.modelRepository.objectStorage.extraArgs) -}}
{{- $messages = append $messages "model.engine onnx needs ssd300/configs/onnx.pbtxt, which modelRepository.objectStorage.extraArgs excludes (--exclude=/*/configs/**): replace it, e.g. with --filter=+ /ssd300/configs/onnx.pbtxt and --filter=- /*/configs/**." -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- $messages = append $messages (printf "autoscaling.minReplicas (%d) must not exceed autoscaling.maxReplicas (%d)." (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if and .Values.pdb.enabled (eq (kindIs "invalid" .Values.pdb.minAvailable) (kindIs "invalid" .Values.pdb.maxUnavailable)) -}}
{{- $messages = append $messages "pdb: set exactly one of pdb.minAvailable and pdb.maxUnavailable." -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}
