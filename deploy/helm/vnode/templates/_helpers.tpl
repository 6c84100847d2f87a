{{/*
Helpers of the vnode chart. The values are interLink's Helm values plus vnode's own (`vnode.*`);
"vnode.link" decides where the agent connects, everything else renders from that decision.
*/}}

{{- define "vnode.name" -}}
{{- .Values.nodeName -}}
{{- end -}}

{{- define "vnode.serviceAccountName" -}}
{{- .Values.vnode.serviceAccount.name | default .Values.nodeName -}}
{{- end -}}

{{- define "vnode.labels" -}}
app.kubernetes.io/name: vnode
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
vnode.dev/node: {{ .Values.nodeName }}
{{- end -}}

{{- define "vnode.selectorLabels" -}}
app.kubernetes.io/name: vnode
app.kubernetes.io/instance: {{ .Release.Name }}
vnode.dev/node: {{ .Values.nodeName }}
{{- end -}}

{{/* An image reference from {repository, tag}; the tag defaults to the chart's appVersion. */}}
{{- define "vnode.image" -}}
{{- $img := index . 0 -}}{{- $ctx := index . 1 -}}
{{- printf "%s:%s" $img.repository ($img.tag | default $ctx.Chart.AppVersion) -}}
{{- end -}}

{{/*
A number as Kubernetes wants it: Helm reads YAML numbers as float64, which fmt would print as 1e+06.
Whole numbers print as integers, fractions as written, strings unchanged.
*/}}
{{- define "vnode.num" -}}
{{- if kindIs "string" . -}}{{- . -}}
{{- else if and (kindIs "float64" .) (eq . (floor .)) -}}{{- printf "%d" (int64 .) -}}
{{- else -}}{{- printf "%v" . -}}
{{- end -}}
{{- end -}}

{{/* The path of a unix:/// URL, "" for anything else. */}}
{{- define "vnode.socketPath" -}}
{{- if and (kindIs "string" .) (hasPrefix "unix://" .) -}}{{- trimPrefix "unix://" . -}}{{- end -}}
{{- end -}}

{{/*
Where the agent connects, as YAML: url, port, dialect, mode, tunnelSocket, tunnelTCPPort.

  mode "plugin-direct"  interlink.enabled or plugin.enabled (and vnode.dialect is not "interlink"):
                        interLink would run VK -> API -> plugin; the agent talks to the plugin itself,
                        at plugin.socket, else interlink.pluginEndpoint.url/port, else plugin.address/port.
  mode "api-in-pod"     interlink.enabled with vnode.dialect "interlink": interLink's API container
                        stays in the pod and the agent talks to it (interlink.socket or address/port).
  mode "remote"         otherwise (edge): an endpoint outside the pod, interlink.socket or
                        interlink.address/port; an interLink API unless vnode.dialect says "plugin".

tunnelSocket: the unix socket an SSH forward must create for the backend to be reachable (what the
login node's `ssh -R` targets on the bastion, or what the sshTunnel sidecar's `ssh -L` creates).
*/}}
{{- define "vnode.link" -}}
{{- $v := .Values -}}
{{- $il := $v.interlink -}}
{{- $pl := $v.plugin -}}
{{- $dialect := $v.vnode.dialect | default "" -}}
{{- if not (has $dialect (list "" "plugin" "interlink")) -}}
{{- fail (printf "vnode.dialect: %q is not one of \"\", \"plugin\", \"interlink\"" $dialect) -}}
{{- end -}}
{{- $plSock := $pl.socket | default "" -}}
{{- $ilSock := $il.socket | default "" -}}
{{- $url := "" -}}{{- $port := "" -}}{{- $mode := "" -}}{{- $tunnel := "" -}}
{{- if and $il.enabled (eq $dialect "interlink") -}}
  {{- $mode = "api-in-pod" -}}
  {{- if $ilSock -}}{{- $url = $ilSock -}}
  {{- else -}}{{- $url = $il.address -}}{{- $port = include "vnode.num" $il.port -}}{{- end -}}
  {{- if $plSock -}}{{- $tunnel = $plSock -}}{{- end -}}
{{- else if or $il.enabled $pl.enabled -}}
  {{- $mode = "plugin-direct" -}}{{- $dialect = "plugin" -}}
  {{- if $plSock -}}{{- $url = $plSock -}}
  {{- else if $il.pluginEndpoint.url -}}
    {{- $url = $il.pluginEndpoint.url -}}{{- $port = include "vnode.num" ($il.pluginEndpoint.port | default "") -}}
  {{- else if $pl.address -}}
    {{- $url = $pl.address -}}{{- $port = include "vnode.num" $pl.port -}}
  {{- else -}}
    {{- fail "plugin.socket: the agent talks to the plugin directly (interlink.enabled or plugin.enabled), so set plugin.socket (unix:///path), plugin.address/plugin.port or interlink.pluginEndpoint.url" -}}
  {{- end -}}
  {{- if hasPrefix "unix://" $url -}}{{- $tunnel = $url -}}{{- end -}}
{{- else -}}
  {{- $mode = "remote" -}}{{- $dialect = $dialect | default "interlink" -}}
  {{- if $ilSock -}}{{- $url = $ilSock -}}{{- $tunnel = $ilSock -}}
  {{- else -}}{{- $url = $il.address -}}{{- $port = include "vnode.num" $il.port -}}{{- end -}}
{{- end -}}
{{- if not $url -}}
{{- fail "interlink.address: no endpoint for the agent (set interlink.address/port, interlink.socket or plugin.socket)" -}}
{{- end -}}
{{- if not (or (hasPrefix "unix:///" $url) (hasPrefix "http://" $url) (hasPrefix "https://" $url)) -}}
{{- fail (printf "agent endpoint %q must start with unix:///, http:// or https:// (check interlink.socket, interlink.address, plugin.socket, plugin.address)" $url) -}}
{{- end -}}
{{- $tcpPort := "" -}}
{{- if and (not $tunnel) (regexMatch "^http://(localhost|127\\.0\\.0\\.1)(:[0-9]+)?/?$" $url) -}}
  {{- $tcpPort = $port | default (regexReplaceAll "^http://[^:]+:?([0-9]*)/?$" $url "${1}") -}}
{{- end -}}
url: {{ $url | quote }}
port: {{ $port | quote }}
dialect: {{ $dialect | quote }}
mode: {{ $mode | quote }}
tunnelSocket: {{ include "vnode.socketPath" $tunnel | quote }}
tunnelTCPPort: {{ $tcpPort | quote }}
{{- end -}}

{{/* Every directory of a unix socket some container of the pod uses (one emptyDir, mounted there). */}}
{{- define "vnode.socketDirs" -}}
{{- $link := include "vnode.link" . | fromYaml -}}
{{- $dirs := list -}}
{{- range $u := list $link.url (.Values.plugin.socket | default "") (.Values.interlink.socket | default "") -}}
{{- $p := include "vnode.socketPath" $u -}}
{{- if $p -}}{{- $dirs = append $dirs (dir $p) -}}{{- end -}}
{{- end -}}
{{- $dirs | uniq | toJson -}}
{{- end -}}

{{/* The agent's config file, interLink's VirtualKubeletConfig keys plus vnode's, as YAML. */}}
{{- define "vnode.agentConfig" -}}
{{- $v := .Values -}}
{{- $vn := $v.virtualNode -}}
{{- $res := $vn.resources | default dict -}}
{{- $link := include "vnode.link" . | fromYaml -}}
{{- $c := dict "InterlinkURL" $link.url "Dialect" $link.dialect -}}
{{- if $link.port -}}{{- $_ := set $c "InterlinkPort" $link.port -}}{{- end -}}
{{- if $v.OAUTH.enabled -}}{{- $_ := set $c "VKTokenFile" "/opt/interlink/token" -}}{{- end -}}
{{- /* interLink's older values put CPUs/MemGiB/Pods right under virtualNode */ -}}
{{- $cpu := $res.CPUs | default $vn.CPUs | default 8 -}}
{{- $mem := $res.memGiB | default $vn.MemGiB | default $vn.memGiB | default 49 -}}
{{- $pods := $res.pods | default $vn.Pods | default $vn.pods | default 100 -}}
{{- $r := dict "CPU" (include "vnode.num" $cpu) "Memory" (printf "%sGi" (include "vnode.num" $mem)) "Pods" (include "vnode.num" $pods) -}}
{{- $accs := list -}}
{{- range $i, $a := $res.accelerators | default list -}}
{{- if not $a.resourceType -}}{{- fail (printf "virtualNode.resources.accelerators[%d].resourceType is required" $i) -}}{{- end -}}
{{- $accs = append $accs (dict "ResourceType" $a.resourceType "Model" ($a.model | default "" | toString) "Available" (include "vnode.num" ($a.available | default 0))) -}}
{{- end -}}
{{- if $accs -}}{{- $_ := set $r "Accelerators" $accs -}}{{- end -}}
{{- $_ := set $c "Resources" $r -}}
{{- with $vn.nodeLabels -}}{{- $_ := set $c "NodeLabels" . -}}{{- end -}}
{{- $taints := list -}}
{{- range $i, $t := $vn.nodeTaints | default list -}}
{{- if not $t.key -}}{{- fail (printf "virtualNode.nodeTaints[%d].key is required" $i) -}}{{- end -}}
{{- $taints = append $taints (dict "Key" $t.key "Value" ($t.value | default "" | toString) "Effect" ($t.effect | default "NoSchedule")) -}}
{{- end -}}
{{- if $taints -}}{{- $_ := set $c "NodeTaints" $taints -}}{{- end -}}
{{- $http := $vn.HTTP | default dict -}}
{{- $h := dict "Insecure" ($http.insecure | default false) -}}
{{- if $http.CACert -}}{{- $_ := set $h "CaCert" $http.CACert -}}{{- end -}}
{{- $_ := set $c "HTTP" $h -}}
{{- $_ := set $c "KubeletHTTP" (dict "Insecure" (($vn.kubeletHTTP | default dict).insecure | default false)) -}}
{{- $il := $v.interlink -}}
{{- with $il.kubernetesApiAddr -}}{{- $_ := set $c "KubernetesApiAddr" . -}}{{- end -}}
{{- with $il.kubernetesApiPort -}}{{- $_ := set $c "KubernetesApiPort" (include "vnode.num" .) -}}{{- end -}}
{{- with $il.kubernetesApiCaCrt -}}{{- $_ := set $c "KubernetesApiCaCrt" . -}}{{- end -}}
{{- if $il.disableProjectedVolumes -}}{{- $_ := set $c "DisableProjectedVolumes" true -}}{{- end -}}
{{- if $il.skipDownwardAPIResolution -}}{{- $_ := set $c "SkipDownwardAPIResolution" true -}}{{- end -}}
{{- with $vn.JobScriptBuilderURL -}}{{- $_ := set $c "JobScriptBuilderURL" . -}}{{- end -}}
{{- $log := $il.logging | default dict -}}
{{- $_ := set $c "VerboseLogging" ($log.verboseLogging | default false) -}}
{{- $_ := set $c "ErrorsOnlyLogging" ($log.errorsOnlyLogging | default false) -}}
{{- if ($il.tls | default dict).enabled -}}
{{- $_ := set $c "TLS" (dict "Enabled" true "CertFile" ($il.tls.certFile | default "") "KeyFile" ($il.tls.keyFile | default "") "CACertFile" ($il.tls.caCertFile | default "")) -}}
{{- end -}}
{{- $_ := set $c "DisableCSR" ($vn.disableCSR | default false) -}}
{{- if $v.vnode.kubeletCert.secretName -}}
{{- $_ := set $c "KubeletCertFile" "/etc/vnode/kubelet-tls/tls.crt" -}}
{{- $_ := set $c "KubeletKeyFile" "/etc/vnode/kubelet-tls/tls.key" -}}
{{- end -}}
{{- if $v.vnode.csrApprover.enabled -}}{{- $_ := set $c "KubeletCSRAutoApprove" true -}}{{- end -}}
{{- $_ := set $c "HealthPort" (int $v.vnode.healthPort) -}}
{{- $_ := set $c "HealthAddress" "0.0.0.0" -}}
{{- $_ := set $c "StateNamespace" $v.vnode.stateNamespace -}}
{{- $net := $vn.network | default dict -}}
{{- if or $net.enableTunnel $net.fullMesh -}}
{{- /* passed on so the agent logs that interLink's pod networking is not implemented */ -}}
{{- $_ := set $c "Network" (dict "EnableTunnel" ($net.enableTunnel | default false) "FullMesh" ($net.fullMesh | default false)) -}}
{{- end -}}
{{- $c = mergeOverwrite $c ($v.vnode.extraConfig | default dict) -}}
{{- toYaml $c -}}
{{- end -}}

{{/* interLink API server config, only for mode api-in-pod (interLink's own keys). */}}
{{- define "vnode.interlinkApiConfig" -}}
{{- $il := .Values.interlink -}}
{{- $pl := .Values.plugin -}}
{{- $c := dict -}}
{{- if $il.socket -}}{{- $_ := set $c "InterlinkAddress" $il.socket -}}
{{- else -}}{{- $_ := set $c "InterlinkAddress" $il.address -}}{{- $_ := set $c "InterlinkPort" (include "vnode.num" $il.port) -}}{{- end -}}
{{- if $pl.socket -}}{{- $_ := set $c "SidecarURL" $pl.socket -}}
{{- else if $il.pluginEndpoint.url -}}{{- $_ := set $c "SidecarURL" $il.pluginEndpoint.url -}}{{- $_ := set $c "SidecarPort" (include "vnode.num" ($il.pluginEndpoint.port | default "")) -}}
{{- else -}}{{- $_ := set $c "SidecarURL" ($pl.address | default "http://localhost") -}}{{- $_ := set $c "SidecarPort" (include "vnode.num" $pl.port) -}}{{- end -}}
{{- $log := $il.logging | default dict -}}
{{- $_ := set $c "VerboseLogging" ($log.verboseLogging | default false) -}}
{{- $_ := set $c "ErrorsOnlyLogging" ($log.errorsOnlyLogging | default false) -}}
{{- $_ := set $c "DataRootFolder" "/data/interlink" -}}
{{- toYaml $c -}}
{{- end -}}

{{/* Checks that give one clear message naming the value, before anything renders. */}}
{{- define "vnode.validate" -}}
{{- $v := .Values -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" (toString $v.nodeName)) -}}
{{- fail (printf "nodeName: %q is not a valid node name (lowercase letters, digits, '-' and '.')" (toString $v.nodeName)) -}}
{{- end -}}
{{- if gt (len (toString $v.nodeName)) 63 -}}
{{- fail (printf "nodeName: %q is longer than 63 characters (it also names the Deployment and a label value)" $v.nodeName) -}}
{{- end -}}
{{- range $key, $sock := dict "plugin.socket" ($v.plugin.socket | default "") "interlink.socket" ($v.interlink.socket | default "") -}}
{{- if and $sock (not (hasPrefix "unix:///" $sock)) -}}
{{- fail (printf "%s: %q must be unix:///absolute/path" $key $sock) -}}
{{- end -}}
{{- end -}}
{{- if $v.sshBastion.enabled -}}
{{- if not (or $v.sshBastion.clientKeys.authorizedKeys $v.sshBastion.clientKeys.keysURL) -}}
{{- fail "sshBastion.clientKeys.authorizedKeys: required when sshBastion.enabled (or set sshBastion.clientKeys.keysURL)" -}}
{{- end -}}
{{- $p := int $v.sshBastion.port -}}
{{- if or (lt $p 30000) (gt $p 32767) -}}
{{- fail (printf "sshBastion.port: %v is outside the NodePort range 30000-32767" $v.sshBastion.port) -}}
{{- end -}}
{{- if and $v.sshBastion.hostKeys.priv (not $v.sshBastion.hostKeys.pub) -}}
{{- fail "sshBastion.hostKeys.pub: required with sshBastion.hostKeys.priv" -}}
{{- end -}}
{{- end -}}
{{- $t := $v.vnode.sshTunnel -}}
{{- if $t.enabled -}}
{{- if not $t.destination -}}{{- fail "vnode.sshTunnel.destination: required (user@login-node) when vnode.sshTunnel.enabled" -}}{{- end -}}
{{- if not (hasPrefix "/" ($t.remoteSocket | default "")) -}}{{- fail "vnode.sshTunnel.remoteSocket: required, an absolute path of the plugin socket on the login node" -}}{{- end -}}
{{- if not $t.keySecret -}}{{- fail "vnode.sshTunnel.keySecret: required, the Secret holding the SSH private key" -}}{{- end -}}
{{- $link := include "vnode.link" . | fromYaml -}}
{{- if not $link.tunnelSocket -}}{{- fail "vnode.sshTunnel.enabled: the agent endpoint is not a unix socket; set plugin.socket (e.g. unix:///var/run/plugin.sock) for the tunnel to create" -}}{{- end -}}
{{- end -}}
{{- if and $v.plugin.enabled $v.plugin.socket $v.sshBastion.enabled -}}
{{- fail "sshBastion.enabled: the plugin runs in this pod (plugin.enabled) and listens on plugin.socket, which a tunnel would also create; disable one of them" -}}
{{- end -}}
{{- end -}}
