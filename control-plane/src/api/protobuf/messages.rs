//! Field numbers and types of the Kubernetes messages this server decodes
//! from protobuf (Kubernetes 1.32 wire format): the kinds kubectl's typed
//! commands create, and everything they contain. A message not listed here
//! is refused by name. `Inline` marks Go structs embedded in their parent:
//! their fields appear in the parent's JSON.

use super::Ty::*;
use super::{Field, Message};

macro_rules! msg {
    ($name:literal, [$(($n:literal, $json:literal, $ty:expr)),* $(,)?]) => {
        Message {
            name: $name,
            fields: &[$(Field { number: $n, name: $json, ty: $ty }),*],
        }
    };
}

pub static ALL: &[Message] = &[
    msg!(
        "Unknown",
        [
            (1, "typeMeta", Msg("TypeMeta")),
            (2, "raw", Bytes),
            (3, "contentEncoding", Str),
            (4, "contentType", Str),
        ]
    ),
    msg!("TypeMeta", [(1, "apiVersion", Str), (2, "kind", Str),]),
    msg!(
        "ObjectMeta",
        [
            (1, "name", Str),
            (2, "generateName", Str),
            (3, "namespace", Str),
            (4, "selfLink", Str),
            (5, "uid", Str),
            (6, "resourceVersion", Str),
            (7, "generation", I64),
            (8, "creationTimestamp", Time),
            (9, "deletionTimestamp", Time),
            (10, "deletionGracePeriodSeconds", I64),
            (11, "labels", MapStr),
            (12, "annotations", MapStr),
            (13, "ownerReferences", Rep(&Msg("OwnerReference"))),
            (14, "finalizers", Rep(&Str)),
            (17, "managedFields", Rep(&Msg("ManagedFieldsEntry"))),
        ]
    ),
    msg!(
        "OwnerReference",
        [
            (1, "kind", Str),
            (3, "name", Str),
            (4, "uid", Str),
            (5, "apiVersion", Str),
            (6, "controller", Bool),
            (7, "blockOwnerDeletion", Bool),
        ]
    ),
    msg!(
        "ManagedFieldsEntry",
        [
            (1, "manager", Str),
            (2, "operation", Str),
            (3, "apiVersion", Str),
            (4, "time", Time),
            (6, "fieldsType", Str),
            (7, "fieldsV1", RawExtension),
            (8, "subresource", Str),
        ]
    ),
    msg!("FieldsV1", [(1, "Raw", Bytes),]),
    msg!(
        "LabelSelector",
        [
            (1, "matchLabels", MapStr),
            (2, "matchExpressions", Rep(&Msg("LabelSelectorRequirement"))),
        ]
    ),
    msg!(
        "LabelSelectorRequirement",
        [
            (1, "key", Str),
            (2, "operator", Str),
            (3, "values", Rep(&Str)),
        ]
    ),
    msg!("Duration", [(1, "duration", I64),]),
    // The body of a delete (`kubectl drain --disable-eviction`, client-go's
    // typed Delete) and of a pod's eviction.
    msg!(
        "DeleteOptions",
        [
            (1, "gracePeriodSeconds", I64),
            (2, "preconditions", Msg("Preconditions")),
            (3, "orphanDependents", Bool),
            (4, "propagationPolicy", Str),
            (5, "dryRun", Rep(&Str)),
        ]
    ),
    msg!(
        "Preconditions",
        [(1, "uid", Str), (2, "resourceVersion", Str),]
    ),
    // policy/v1 and policy/v1beta1 alike: what `kubectl drain` posts to
    // `pods/<name>/eviction`.
    msg!(
        "Eviction",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "deleteOptions", Msg("DeleteOptions")),
        ]
    ),
    msg!(
        "Namespace",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("NamespaceSpec")),
            (3, "status", Msg("NamespaceStatus")),
        ]
    ),
    msg!("NamespaceSpec", [(1, "finalizers", Rep(&Str)),]),
    msg!(
        "ConfigMap",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "data", MapStr),
            (3, "binaryData", MapBytes),
            (4, "immutable", Bool),
        ]
    ),
    msg!(
        "Secret",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "data", MapBytes),
            (3, "type", Str),
            (4, "stringData", MapStr),
            (5, "immutable", Bool),
        ]
    ),
    msg!(
        "ServiceAccount",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "secrets", Rep(&Msg("ObjectReference"))),
            (3, "imagePullSecrets", Rep(&Msg("LocalObjectReference"))),
            (4, "automountServiceAccountToken", Bool),
        ]
    ),
    msg!(
        "ObjectReference",
        [
            (1, "kind", Str),
            (2, "namespace", Str),
            (3, "name", Str),
            (4, "uid", Str),
            (5, "apiVersion", Str),
            (6, "resourceVersion", Str),
            (7, "fieldPath", Str),
        ]
    ),
    msg!("LocalObjectReference", [(1, "name", Str),]),
    msg!(
        "Service",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("ServiceSpec")),
            (3, "status", Msg("ServiceStatus")),
        ]
    ),
    msg!(
        "ServiceSpec",
        [
            (1, "ports", Rep(&Msg("ServicePort"))),
            (2, "selector", MapStr),
            (3, "clusterIP", Str),
            (4, "type", Str),
            (5, "externalIPs", Rep(&Str)),
            (7, "sessionAffinity", Str),
            (8, "loadBalancerIP", Str),
            (9, "loadBalancerSourceRanges", Rep(&Str)),
            (10, "externalName", Str),
            (11, "externalTrafficPolicy", Str),
            (12, "healthCheckNodePort", I32),
            (13, "publishNotReadyAddresses", Bool),
            (14, "sessionAffinityConfig", Msg("SessionAffinityConfig")),
            (17, "ipFamilyPolicy", Str),
            (18, "clusterIPs", Rep(&Str)),
            (19, "ipFamilies", Rep(&Str)),
            (20, "allocateLoadBalancerNodePorts", Bool),
            (21, "loadBalancerClass", Str),
            (22, "internalTrafficPolicy", Str),
            (23, "trafficDistribution", Str),
        ]
    ),
    msg!(
        "ServicePort",
        [
            (1, "name", Str),
            (2, "protocol", Str),
            (3, "port", I32),
            (4, "targetPort", IntOrString),
            (5, "nodePort", I32),
            (6, "appProtocol", Str),
        ]
    ),
    msg!(
        "SessionAffinityConfig",
        [(1, "clientIP", Msg("ClientIPConfig")),]
    ),
    msg!("ClientIPConfig", [(1, "timeoutSeconds", I32),]),
    msg!(
        "Pod",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("PodSpec")),
            (3, "status", Msg("PodStatus")),
        ]
    ),
    msg!(
        "PodSpec",
        [
            (1, "volumes", Rep(&Msg("Volume"))),
            (2, "containers", Rep(&Msg("Container"))),
            (3, "restartPolicy", Str),
            (4, "terminationGracePeriodSeconds", I64),
            (5, "activeDeadlineSeconds", I64),
            (6, "dnsPolicy", Str),
            (7, "nodeSelector", MapStr),
            (8, "serviceAccountName", Str),
            (9, "serviceAccount", Str),
            (10, "nodeName", Str),
            (11, "hostNetwork", Bool),
            (12, "hostPID", Bool),
            (13, "hostIPC", Bool),
            (14, "securityContext", Msg("PodSecurityContext")),
            (15, "imagePullSecrets", Rep(&Msg("LocalObjectReference"))),
            (16, "hostname", Str),
            (17, "subdomain", Str),
            (18, "affinity", Msg("Affinity")),
            (19, "schedulerName", Str),
            (20, "initContainers", Rep(&Msg("Container"))),
            (21, "automountServiceAccountToken", Bool),
            (22, "tolerations", Rep(&Msg("Toleration"))),
            (23, "hostAliases", Rep(&Msg("HostAlias"))),
            (24, "priorityClassName", Str),
            (25, "priority", I32),
            (26, "dnsConfig", Msg("PodDNSConfig")),
            (27, "shareProcessNamespace", Bool),
            (28, "readinessGates", Rep(&Msg("PodReadinessGate"))),
            (29, "runtimeClassName", Str),
            (30, "enableServiceLinks", Bool),
            (31, "preemptionPolicy", Str),
            (32, "overhead", MapMsg("Quantity")),
            (
                33,
                "topologySpreadConstraints",
                Rep(&Msg("TopologySpreadConstraint"))
            ),
            (34, "ephemeralContainers", Rep(&Msg("EphemeralContainer"))),
            (35, "setHostnameAsFQDN", Bool),
            (36, "os", Msg("PodOS")),
            (37, "hostUsers", Bool),
            (38, "schedulingGates", Rep(&Msg("PodSchedulingGate"))),
            (39, "resourceClaims", Rep(&Msg("PodResourceClaim"))),
            (40, "resources", Msg("ResourceRequirements")),
        ]
    ),
    msg!(
        "PodTemplateSpec",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("PodSpec")),
        ]
    ),
    msg!(
        "Container",
        [
            (1, "name", Str),
            (2, "image", Str),
            (3, "command", Rep(&Str)),
            (4, "args", Rep(&Str)),
            (5, "workingDir", Str),
            (6, "ports", Rep(&Msg("ContainerPort"))),
            (7, "env", Rep(&Msg("EnvVar"))),
            (8, "resources", Msg("ResourceRequirements")),
            (9, "volumeMounts", Rep(&Msg("VolumeMount"))),
            (10, "livenessProbe", Msg("Probe")),
            (11, "readinessProbe", Msg("Probe")),
            (12, "lifecycle", Msg("Lifecycle")),
            (13, "terminationMessagePath", Str),
            (14, "imagePullPolicy", Str),
            (15, "securityContext", Msg("SecurityContext")),
            (16, "stdin", Bool),
            (17, "stdinOnce", Bool),
            (18, "tty", Bool),
            (19, "envFrom", Rep(&Msg("EnvFromSource"))),
            (20, "terminationMessagePolicy", Str),
            (21, "volumeDevices", Rep(&Msg("VolumeDevice"))),
            (22, "startupProbe", Msg("Probe")),
            (23, "resizePolicy", Rep(&Msg("ContainerResizePolicy"))),
            (24, "restartPolicy", Str),
        ]
    ),
    msg!(
        "ContainerPort",
        [
            (1, "name", Str),
            (2, "hostPort", I32),
            (3, "containerPort", I32),
            (4, "protocol", Str),
            (5, "hostIP", Str),
        ]
    ),
    msg!(
        "EnvVar",
        [
            (1, "name", Str),
            (2, "value", Str),
            (3, "valueFrom", Msg("EnvVarSource")),
        ]
    ),
    msg!(
        "EnvVarSource",
        [
            (1, "fieldRef", Msg("ObjectFieldSelector")),
            (2, "resourceFieldRef", Msg("ResourceFieldSelector")),
            (3, "configMapKeyRef", Msg("ConfigMapKeySelector")),
            (4, "secretKeyRef", Msg("SecretKeySelector")),
        ]
    ),
    msg!(
        "ConfigMapKeySelector",
        [
            (1, "localObjectReference", Inline("LocalObjectReference")),
            (2, "key", Str),
            (3, "optional", Bool),
        ]
    ),
    msg!(
        "SecretKeySelector",
        [
            (1, "localObjectReference", Inline("LocalObjectReference")),
            (2, "key", Str),
            (3, "optional", Bool),
        ]
    ),
    msg!(
        "ObjectFieldSelector",
        [(1, "apiVersion", Str), (2, "fieldPath", Str),]
    ),
    msg!(
        "ResourceFieldSelector",
        [
            (1, "containerName", Str),
            (2, "resource", Str),
            (3, "divisor", Quantity),
        ]
    ),
    msg!(
        "EnvFromSource",
        [
            (1, "prefix", Str),
            (2, "configMapRef", Msg("ConfigMapEnvSource")),
            (3, "secretRef", Msg("SecretEnvSource")),
        ]
    ),
    msg!(
        "ConfigMapEnvSource",
        [
            (1, "localObjectReference", Inline("LocalObjectReference")),
            (2, "optional", Bool),
        ]
    ),
    msg!(
        "SecretEnvSource",
        [
            (1, "localObjectReference", Inline("LocalObjectReference")),
            (2, "optional", Bool),
        ]
    ),
    msg!(
        "ResourceRequirements",
        [
            (1, "limits", MapMsg("Quantity")),
            (2, "requests", MapMsg("Quantity")),
            (3, "claims", Rep(&Msg("ResourceClaim"))),
        ]
    ),
    msg!("ResourceClaim", [(1, "name", Str), (2, "request", Str),]),
    msg!(
        "VolumeMount",
        [
            (1, "name", Str),
            (2, "readOnly", Bool),
            (3, "mountPath", Str),
            (4, "subPath", Str),
            (5, "mountPropagation", Str),
            (6, "subPathExpr", Str),
            (7, "recursiveReadOnly", Str),
        ]
    ),
    msg!(
        "Volume",
        [
            (1, "name", Str),
            (2, "volumeSource", Inline("VolumeSource")),
        ]
    ),
    msg!(
        "VolumeSource",
        [
            (1, "hostPath", Msg("HostPathVolumeSource")),
            (2, "emptyDir", Msg("EmptyDirVolumeSource")),
            (3, "gcePersistentDisk", Msg("GCEPersistentDiskVolumeSource")),
            (
                4,
                "awsElasticBlockStore",
                Msg("AWSElasticBlockStoreVolumeSource")
            ),
            (5, "gitRepo", Msg("GitRepoVolumeSource")),
            (6, "secret", Msg("SecretVolumeSource")),
            (7, "nfs", Msg("NFSVolumeSource")),
            (8, "iscsi", Msg("ISCSIVolumeSource")),
            (9, "glusterfs", Msg("GlusterfsVolumeSource")),
            (
                10,
                "persistentVolumeClaim",
                Msg("PersistentVolumeClaimVolumeSource")
            ),
            (11, "rbd", Msg("RBDVolumeSource")),
            (12, "flexVolume", Msg("FlexVolumeSource")),
            (13, "cinder", Msg("CinderVolumeSource")),
            (14, "cephfs", Msg("CephFSVolumeSource")),
            (15, "flocker", Msg("FlockerVolumeSource")),
            (16, "downwardAPI", Msg("DownwardAPIVolumeSource")),
            (17, "fc", Msg("FCVolumeSource")),
            (18, "azureFile", Msg("AzureFileVolumeSource")),
            (19, "configMap", Msg("ConfigMapVolumeSource")),
            (20, "vsphereVolume", Msg("VsphereVirtualDiskVolumeSource")),
            (21, "quobyte", Msg("QuobyteVolumeSource")),
            (22, "azureDisk", Msg("AzureDiskVolumeSource")),
            (
                23,
                "photonPersistentDisk",
                Msg("PhotonPersistentDiskVolumeSource")
            ),
            (24, "portworxVolume", Msg("PortworxVolumeSource")),
            (25, "scaleIO", Msg("ScaleIOVolumeSource")),
            (26, "projected", Msg("ProjectedVolumeSource")),
            (27, "storageos", Msg("StorageOSVolumeSource")),
            (28, "csi", Msg("CSIVolumeSource")),
            (29, "ephemeral", Msg("EphemeralVolumeSource")),
            (30, "image", Msg("ImageVolumeSource")),
        ]
    ),
    msg!(
        "EmptyDirVolumeSource",
        [(1, "medium", Str), (2, "sizeLimit", Quantity),]
    ),
    msg!(
        "HostPathVolumeSource",
        [(1, "path", Str), (2, "type", Str),]
    ),
    msg!(
        "ConfigMapVolumeSource",
        [
            (1, "localObjectReference", Inline("LocalObjectReference")),
            (2, "items", Rep(&Msg("KeyToPath"))),
            (3, "defaultMode", I32),
            (4, "optional", Bool),
        ]
    ),
    msg!(
        "SecretVolumeSource",
        [
            (1, "secretName", Str),
            (2, "items", Rep(&Msg("KeyToPath"))),
            (3, "defaultMode", I32),
            (4, "optional", Bool),
        ]
    ),
    msg!(
        "PersistentVolumeClaimVolumeSource",
        [(1, "claimName", Str), (2, "readOnly", Bool),]
    ),
    msg!(
        "KeyToPath",
        [(1, "key", Str), (2, "path", Str), (3, "mode", I32),]
    ),
    msg!(
        "Probe",
        [
            (1, "handler", Inline("ProbeHandler")),
            (2, "initialDelaySeconds", I32),
            (3, "timeoutSeconds", I32),
            (4, "periodSeconds", I32),
            (5, "successThreshold", I32),
            (6, "failureThreshold", I32),
            (7, "terminationGracePeriodSeconds", I64),
        ]
    ),
    msg!(
        "ProbeHandler",
        [
            (1, "exec", Msg("ExecAction")),
            (2, "httpGet", Msg("HTTPGetAction")),
            (3, "tcpSocket", Msg("TCPSocketAction")),
            (4, "grpc", Msg("GRPCAction")),
        ]
    ),
    msg!("ExecAction", [(1, "command", Rep(&Str)),]),
    msg!(
        "HTTPGetAction",
        [
            (1, "path", Str),
            (2, "port", IntOrString),
            (3, "host", Str),
            (4, "scheme", Str),
            (5, "httpHeaders", Rep(&Msg("HTTPHeader"))),
        ]
    ),
    msg!("HTTPHeader", [(1, "name", Str), (2, "value", Str),]),
    msg!(
        "TCPSocketAction",
        [(1, "port", IntOrString), (2, "host", Str),]
    ),
    msg!("GRPCAction", [(1, "port", I32), (2, "service", Str),]),
    msg!(
        "Lifecycle",
        [
            (1, "postStart", Msg("LifecycleHandler")),
            (2, "preStop", Msg("LifecycleHandler")),
        ]
    ),
    msg!(
        "LifecycleHandler",
        [
            (1, "exec", Msg("ExecAction")),
            (2, "httpGet", Msg("HTTPGetAction")),
            (3, "tcpSocket", Msg("TCPSocketAction")),
            (4, "sleep", Msg("SleepAction")),
        ]
    ),
    msg!("SleepAction", [(1, "seconds", I64),]),
    msg!(
        "SecurityContext",
        [
            (1, "capabilities", Msg("Capabilities")),
            (2, "privileged", Bool),
            (3, "seLinuxOptions", Msg("SELinuxOptions")),
            (4, "runAsUser", I64),
            (5, "runAsNonRoot", Bool),
            (6, "readOnlyRootFilesystem", Bool),
            (7, "allowPrivilegeEscalation", Bool),
            (8, "runAsGroup", I64),
            (9, "procMount", Str),
            (10, "windowsOptions", Msg("WindowsSecurityContextOptions")),
            (11, "seccompProfile", Msg("SeccompProfile")),
            (12, "appArmorProfile", Msg("AppArmorProfile")),
        ]
    ),
    msg!(
        "Capabilities",
        [(1, "add", Rep(&Str)), (2, "drop", Rep(&Str)),]
    ),
    msg!(
        "PodSecurityContext",
        [
            (1, "seLinuxOptions", Msg("SELinuxOptions")),
            (2, "runAsUser", I64),
            (3, "runAsNonRoot", Bool),
            (4, "supplementalGroups", Rep(&I64)),
            (5, "fsGroup", I64),
            (6, "runAsGroup", I64),
            (7, "sysctls", Rep(&Msg("Sysctl"))),
            (8, "windowsOptions", Msg("WindowsSecurityContextOptions")),
            (9, "fsGroupChangePolicy", Str),
            (10, "seccompProfile", Msg("SeccompProfile")),
            (11, "appArmorProfile", Msg("AppArmorProfile")),
            (12, "supplementalGroupsPolicy", Str),
            (13, "seLinuxChangePolicy", Str),
        ]
    ),
    msg!(
        "Toleration",
        [
            (1, "key", Str),
            (2, "operator", Str),
            (3, "value", Str),
            (4, "effect", Str),
            (5, "tolerationSeconds", I64),
        ]
    ),
    msg!(
        "Affinity",
        [
            (1, "nodeAffinity", Msg("NodeAffinity")),
            (2, "podAffinity", Msg("PodAffinity")),
            (3, "podAntiAffinity", Msg("PodAntiAffinity")),
        ]
    ),
    msg!(
        "NodeAffinity",
        [
            (
                1,
                "requiredDuringSchedulingIgnoredDuringExecution",
                Msg("NodeSelector")
            ),
            (
                2,
                "preferredDuringSchedulingIgnoredDuringExecution",
                Rep(&Msg("PreferredSchedulingTerm"))
            ),
        ]
    ),
    msg!(
        "NodeSelector",
        [(1, "nodeSelectorTerms", Rep(&Msg("NodeSelectorTerm"))),]
    ),
    msg!(
        "NodeSelectorTerm",
        [
            (1, "matchExpressions", Rep(&Msg("NodeSelectorRequirement"))),
            (2, "matchFields", Rep(&Msg("NodeSelectorRequirement"))),
        ]
    ),
    msg!(
        "NodeSelectorRequirement",
        [
            (1, "key", Str),
            (2, "operator", Str),
            (3, "values", Rep(&Str)),
        ]
    ),
    msg!(
        "PreferredSchedulingTerm",
        [
            (1, "weight", I32),
            (2, "preference", Msg("NodeSelectorTerm")),
        ]
    ),
    msg!(
        "PodAffinity",
        [
            (
                1,
                "requiredDuringSchedulingIgnoredDuringExecution",
                Rep(&Msg("PodAffinityTerm"))
            ),
            (
                2,
                "preferredDuringSchedulingIgnoredDuringExecution",
                Rep(&Msg("WeightedPodAffinityTerm"))
            ),
        ]
    ),
    msg!(
        "PodAntiAffinity",
        [
            (
                1,
                "requiredDuringSchedulingIgnoredDuringExecution",
                Rep(&Msg("PodAffinityTerm"))
            ),
            (
                2,
                "preferredDuringSchedulingIgnoredDuringExecution",
                Rep(&Msg("WeightedPodAffinityTerm"))
            ),
        ]
    ),
    msg!(
        "PodAffinityTerm",
        [
            (1, "labelSelector", Msg("LabelSelector")),
            (2, "namespaces", Rep(&Str)),
            (3, "topologyKey", Str),
            (4, "namespaceSelector", Msg("LabelSelector")),
            (5, "matchLabelKeys", Rep(&Str)),
            (6, "mismatchLabelKeys", Rep(&Str)),
        ]
    ),
    msg!(
        "WeightedPodAffinityTerm",
        [
            (1, "weight", I32),
            (2, "podAffinityTerm", Msg("PodAffinityTerm")),
        ]
    ),
    msg!(
        "TopologySpreadConstraint",
        [
            (1, "maxSkew", I32),
            (2, "topologyKey", Str),
            (3, "whenUnsatisfiable", Str),
            (4, "labelSelector", Msg("LabelSelector")),
            (5, "minDomains", I32),
            (6, "nodeAffinityPolicy", Str),
            (7, "nodeTaintsPolicy", Str),
            (8, "matchLabelKeys", Rep(&Str)),
        ]
    ),
    msg!("HostAlias", [(1, "ip", Str), (2, "hostnames", Rep(&Str)),]),
    msg!(
        "PodDNSConfig",
        [
            (1, "nameservers", Rep(&Str)),
            (2, "searches", Rep(&Str)),
            (3, "options", Rep(&Msg("PodDNSConfigOption"))),
        ]
    ),
    msg!("PodDNSConfigOption", [(1, "name", Str), (2, "value", Str),]),
    msg!("PodReadinessGate", [(1, "conditionType", Str),]),
    msg!(
        "ContainerResizePolicy",
        [(1, "resourceName", Str), (2, "restartPolicy", Str),]
    ),
    msg!(
        "Deployment",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("DeploymentSpec")),
            (3, "status", Msg("DeploymentStatus")),
        ]
    ),
    msg!(
        "DeploymentSpec",
        [
            (1, "replicas", I32),
            (2, "selector", Msg("LabelSelector")),
            (3, "template", Msg("PodTemplateSpec")),
            (4, "strategy", Msg("DeploymentStrategy")),
            (5, "minReadySeconds", I32),
            (6, "revisionHistoryLimit", I32),
            (7, "paused", Bool),
            (9, "progressDeadlineSeconds", I32),
        ]
    ),
    msg!(
        "DeploymentStrategy",
        [
            (1, "type", Str),
            (2, "rollingUpdate", Msg("RollingUpdateDeployment")),
        ]
    ),
    msg!(
        "RollingUpdateDeployment",
        [
            (1, "maxUnavailable", IntOrString),
            (2, "maxSurge", IntOrString),
        ]
    ),
    msg!(
        "Job",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("JobSpec")),
            (3, "status", Msg("JobStatus")),
        ]
    ),
    msg!(
        "JobSpec",
        [
            (1, "parallelism", I32),
            (2, "completions", I32),
            (3, "activeDeadlineSeconds", I64),
            (4, "selector", Msg("LabelSelector")),
            (5, "manualSelector", Bool),
            (6, "template", Msg("PodTemplateSpec")),
            (7, "backoffLimit", I32),
            (8, "ttlSecondsAfterFinished", I32),
            (9, "completionMode", Str),
            (10, "suspend", Bool),
            (11, "podFailurePolicy", Msg("PodFailurePolicy")),
            (12, "backoffLimitPerIndex", I32),
            (13, "maxFailedIndexes", I32),
            (14, "podReplacementPolicy", Str),
            (15, "managedBy", Str),
            (16, "successPolicy", Msg("SuccessPolicy")),
        ]
    ),
    msg!(
        "JobTemplateSpec",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("JobSpec")),
        ]
    ),
    msg!(
        "CronJob",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("CronJobSpec")),
            (3, "status", Msg("CronJobStatus")),
        ]
    ),
    msg!(
        "CronJobSpec",
        [
            (1, "schedule", Str),
            (2, "startingDeadlineSeconds", I64),
            (3, "concurrencyPolicy", Str),
            (4, "suspend", Bool),
            (5, "jobTemplate", Msg("JobTemplateSpec")),
            (6, "successfulJobsHistoryLimit", I32),
            (7, "failedJobsHistoryLimit", I32),
            (8, "timeZone", Str),
        ]
    ),
    msg!(
        "PodFailurePolicy",
        [(1, "rules", Rep(&Msg("PodFailurePolicyRule"))),]
    ),
    msg!(
        "PodFailurePolicyRule",
        [
            (1, "action", Str),
            (
                2,
                "onExitCodes",
                Msg("PodFailurePolicyOnExitCodesRequirement")
            ),
            (
                3,
                "onPodConditions",
                Rep(&Msg("PodFailurePolicyOnPodConditionsPattern"))
            ),
        ]
    ),
    msg!(
        "PodFailurePolicyOnExitCodesRequirement",
        [
            (1, "containerName", Str),
            (2, "operator", Str),
            (3, "values", Rep(&I32)),
        ]
    ),
    msg!(
        "PodFailurePolicyOnPodConditionsPattern",
        [(1, "type", Str), (2, "status", Str),]
    ),
    msg!(
        "SuccessPolicy",
        [(1, "rules", Rep(&Msg("SuccessPolicyRule"))),]
    ),
    msg!(
        "SuccessPolicyRule",
        [(1, "succeededIndexes", Str), (2, "succeededCount", I32),]
    ),
    msg!("Time", [(1, "seconds", I64), (2, "nanos", I32),]),
    msg!(
        "IntOrString",
        [(1, "type", I64), (2, "intVal", I32), (3, "strVal", Str),]
    ),
    msg!("Quantity", [(1, "string", Str),]),
    // autoscaling/v1, what `kubectl autoscale` sends.
    msg!(
        "autoscaling/v1/HorizontalPodAutoscaler",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("autoscaling/v1/HorizontalPodAutoscalerSpec")),
            (
                3,
                "status",
                Msg("autoscaling/v1/HorizontalPodAutoscalerStatus")
            ),
        ]
    ),
    msg!(
        "autoscaling/v1/HorizontalPodAutoscalerSpec",
        [
            (1, "scaleTargetRef", Msg("CrossVersionObjectReference")),
            (2, "minReplicas", I32),
            (3, "maxReplicas", I32),
            (4, "targetCPUUtilizationPercentage", I32),
        ]
    ),
    msg!(
        "autoscaling/v1/HorizontalPodAutoscalerStatus",
        [
            (1, "observedGeneration", I64),
            (2, "lastScaleTime", Time),
            (3, "currentReplicas", I32),
            (4, "desiredReplicas", I32),
            (5, "currentCPUUtilizationPercentage", I32),
        ]
    ),
    msg!(
        "CrossVersionObjectReference",
        [(1, "kind", Str), (2, "name", Str), (3, "apiVersion", Str),]
    ),
    // rbac.authorization.k8s.io/v1 (kubectl create role, rolebinding, ...).
    msg!(
        "PolicyRule",
        [
            (1, "verbs", Rep(&Str)),
            (2, "apiGroups", Rep(&Str)),
            (3, "resources", Rep(&Str)),
            (4, "resourceNames", Rep(&Str)),
            (5, "nonResourceURLs", Rep(&Str)),
        ]
    ),
    msg!(
        "AggregationRule",
        [(1, "clusterRoleSelectors", Rep(&Msg("LabelSelector"))),]
    ),
    msg!(
        "Role",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "rules", Rep(&Msg("PolicyRule"))),
        ]
    ),
    msg!(
        "ClusterRole",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "rules", Rep(&Msg("PolicyRule"))),
            (3, "aggregationRule", Msg("AggregationRule")),
        ]
    ),
    msg!(
        "Subject",
        [
            (1, "kind", Str),
            (2, "apiGroup", Str),
            (3, "name", Str),
            (4, "namespace", Str),
        ]
    ),
    msg!(
        "RoleRef",
        [(1, "apiGroup", Str), (2, "kind", Str), (3, "name", Str),]
    ),
    msg!(
        "RoleBinding",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "subjects", Rep(&Msg("Subject"))),
            (3, "roleRef", Msg("RoleRef")),
        ]
    ),
    msg!(
        "ClusterRoleBinding",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "subjects", Rep(&Msg("Subject"))),
            (3, "roleRef", Msg("RoleRef")),
        ]
    ),
    // authorization.k8s.io/v1 and authentication.k8s.io/v1 (kubectl auth).
    msg!(
        "ResourceAttributes",
        [
            (1, "namespace", Str),
            (2, "verb", Str),
            (3, "group", Str),
            (4, "version", Str),
            (5, "resource", Str),
            (6, "subresource", Str),
            (7, "name", Str),
        ]
    ),
    msg!(
        "NonResourceAttributes",
        [(1, "path", Str), (2, "verb", Str),]
    ),
    msg!(
        "SelfSubjectAccessReviewSpec",
        [
            (1, "resourceAttributes", Msg("ResourceAttributes")),
            (2, "nonResourceAttributes", Msg("NonResourceAttributes")),
        ]
    ),
    msg!(
        "SelfSubjectAccessReview",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("SelfSubjectAccessReviewSpec")),
            (3, "status", Msg("SubjectAccessReviewStatus")),
        ]
    ),
    msg!(
        "SubjectAccessReviewStatus",
        [
            (1, "allowed", Bool),
            (2, "reason", Str),
            (3, "evaluationError", Str),
            (4, "denied", Bool),
        ]
    ),
    msg!(
        "ResourceRule",
        [
            (1, "verbs", Rep(&Str)),
            (2, "apiGroups", Rep(&Str)),
            (3, "resources", Rep(&Str)),
            (4, "resourceNames", Rep(&Str)),
        ]
    ),
    msg!(
        "NonResourceRule",
        [(1, "verbs", Rep(&Str)), (2, "nonResourceURLs", Rep(&Str)),]
    ),
    msg!(
        "SubjectRulesReviewStatus",
        [
            (1, "resourceRules", Rep(&Msg("ResourceRule"))),
            (2, "nonResourceRules", Rep(&Msg("NonResourceRule"))),
            (3, "incomplete", Bool),
            (4, "evaluationError", Str),
        ]
    ),
    msg!(
        "UserInfo",
        [
            (1, "username", Str),
            (2, "uid", Str),
            (3, "groups", Rep(&Str)),
            (4, "extra", MapMsg("ExtraValue")),
        ]
    ),
    msg!(
        "SelfSubjectReviewStatus",
        [(1, "userInfo", Msg("UserInfo")),]
    ),
    msg!(
        "TokenReviewStatus",
        [
            (1, "authenticated", Bool),
            (2, "user", Msg("UserInfo")),
            (3, "error", Str),
            (4, "audiences", Rep(&Str)),
        ]
    ),
    msg!("SelfSubjectRulesReviewSpec", [(1, "namespace", Str),]),
    msg!(
        "SelfSubjectRulesReview",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("SelfSubjectRulesReviewSpec")),
            (3, "status", Msg("SubjectRulesReviewStatus")),
        ]
    ),
    msg!("ExtraValue", [(1, "items", Rep(&Str)),]),
    msg!(
        "SubjectAccessReviewSpec",
        [
            (1, "resourceAttributes", Msg("ResourceAttributes")),
            (2, "nonResourceAttributes", Msg("NonResourceAttributes")),
            (3, "user", Str),
            (4, "groups", Rep(&Str)),
            (5, "extra", MapMsg("ExtraValue")),
            (6, "uid", Str),
        ]
    ),
    msg!(
        "SubjectAccessReview",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("SubjectAccessReviewSpec")),
            (3, "status", Msg("SubjectAccessReviewStatus")),
        ]
    ),
    msg!(
        "LocalSubjectAccessReview",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("SubjectAccessReviewSpec")),
            (3, "status", Msg("SubjectAccessReviewStatus")),
        ]
    ),
    msg!(
        "SelfSubjectReview",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "status", Msg("SelfSubjectReviewStatus")),
        ]
    ),
    msg!(
        "TokenReviewSpec",
        [(1, "token", Str), (2, "audiences", Rep(&Str)),]
    ),
    msg!(
        "TokenReview",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("TokenReviewSpec")),
            (3, "status", Msg("TokenReviewStatus")),
        ]
    ),
    msg!(
        "BoundObjectReference",
        [
            (1, "kind", Str),
            (2, "apiVersion", Str),
            (3, "name", Str),
            (4, "uid", Str),
        ]
    ),
    msg!(
        "TokenRequestSpec",
        [
            (1, "audiences", Rep(&Str)),
            (3, "boundObjectRef", Msg("BoundObjectReference")),
            (4, "expirationSeconds", I64),
        ]
    ),
    msg!(
        "TokenRequestStatus",
        [(1, "token", Str), (2, "expirationTimestamp", Time),]
    ),
    msg!(
        "TokenRequest",
        [
            (1, "metadata", Msg("ObjectMeta")),
            (2, "spec", Msg("TokenRequestSpec")),
            (3, "status", Msg("TokenRequestStatus")),
        ]
    ),
];
