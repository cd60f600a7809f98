#!/usr/bin/env bash
# The local cluster's PKI with openssl (pki.sh NODE_IP): a CA, the API server's serving certificate,
# a client certificate and kubeconfig per component, the kubelet's serving certificate, the
# service-account key pair and the aggregation layer's front-proxy CA and client certificate.
# ECDSA P-256 keys (quick to make); everything under STATE/pki. `pki.sh NODE_IP front-proxy` makes
# only the front-proxy pair, when missing (a cluster brought up before the aggregation layer).
source "$(dirname "$0")/lib.sh"
NODE_IP=$1
MODE=${2:-all}
cd "$PKI"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }

openssl_conf() {  # openssl_conf SANS EXTENDED-USAGE: an extension file for one certificate
  {
    echo "[ext]"
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
    echo "extendedKeyUsage = $2"
    if [ -n "$1" ]; then echo "subjectAltName = $1"; fi
  } >ext.cnf
}

cert() {  # cert NAME SUBJECT SANS USAGE: a key and a certificate signed by the CA, valid 1 year
  key "$1"
  openssl_conf "$3" "$4"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
    -extfile ext.cnf -extensions ext -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" ext.cnf
}

kubeconfig() {  # kubeconfig NAME: a kubeconfig for the client certificate NAME.crt
  cat >"$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: flywheel-local
    cluster:
      server: https://127.0.0.1:6443
      certificate-authority: $PKI/ca.crt
users:
  - name: $1
    user:
      client-certificate: $PKI/$1.crt
      client-key: $PKI/$1.key
contexts:
  - name: flywheel-local
    context: {cluster: flywheel-local, user: $1}
current-context: flywheel-local
EOF
}

front_proxy() {
  # The aggregation layer: the API server proxies custom.metrics.k8s.io to the metrics adapter with
  # this client certificate, and the adapter trusts the user headers of requests signed by this CA
  # (a CA of its own, as kubeadm does: a certificate of the main CA would pass as any user).
  [ -f front-proxy-client.crt ] && [ -f front-proxy-ca.crt ] && return 0
  key front-proxy-ca
  openssl req -x509 -new -key front-proxy-ca.key -subj "/CN=flywheel-local-front-proxy-ca" -days 365 \
    -out front-proxy-ca.crt -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  key front-proxy-client
  openssl_conf "" clientAuth
  openssl req -new -key front-proxy-client.key -subj "/CN=front-proxy-client" -out front-proxy-client.csr 2>/dev/null
  openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key -CAcreateserial \
    -days 365 -extfile ext.cnf -extensions ext -out front-proxy-client.crt 2>/dev/null
  rm -f front-proxy-client.csr ext.cnf
  chmod 600 front-proxy-ca.key front-proxy-client.key
}
if [ "$MODE" = front-proxy ]; then
  front_proxy
  exit 0
fi

key ca
openssl req -x509 -new -key ca.key -subj "/CN=flywheel-local-ca" -days 365 -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

cert apiserver "/CN=kube-apiserver" \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$APISERVER_SERVICE_IP,IP:$NODE_IP" \
  serverAuth
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "" clientAuth
cert kubelet "/CN=$NODE_NAME" "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP" serverAuth
cert admin "/O=system:masters/CN=flywheel-local-admin" "" clientAuth
cert controller-manager "/CN=system:kube-controller-manager" "" clientAuth
cert scheduler "/CN=system:kube-scheduler" "" clientAuth
cert kube-proxy "/CN=system:kube-proxy" "" clientAuth
# The node's client certificate (the Node authorizer knows it by this name and group).
cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" "" clientAuth
for c in admin controller-manager scheduler kube-proxy kubelet-client; do kubeconfig "$c"; done
mv kubelet-client.kubeconfig kubelet.kubeconfig
cp admin.kubeconfig "$KUBECONFIG_ADMIN"
front_proxy
key sa
openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
chmod 600 ./*.key
