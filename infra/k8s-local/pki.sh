#!/usr/bin/env bash
# The local cluster's PKI with openssl (pki.sh NODE_IP): a CA, the API server's serving certificate,
# a client certificate and kubeconfig per component, the kubelet's serving certificate and the
# service-account key pair. ECDSA P-256 keys (quick to make); everything under STATE/pki.
source "$(dirname "$0")/lib.sh"
NODE_IP=$1
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
key sa
openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
chmod 600 ./*.key
