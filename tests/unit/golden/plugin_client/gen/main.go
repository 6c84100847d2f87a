// Command gen writes the golden JSON files for vnode's plugin_client tests.
//
// Every file inputs/<Type>.<case>.json is decoded with Go's encoding/json into the Go type named
// <Type> and encoded again; the bytes go to outputs/<Type>.<case>.json. When Go refuses to decode
// the input, the output file holds "ERROR: <message>" instead. The Go types below carry the JSON
// tags of interLink's pkg/interlink types (the wire format), declared here because interLink's
// module is not on the Go module proxy. PingResponse is reconstructed from the interLink docs.
//
// Run: go run . ../inputs ../outputs
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"time"
)

type retrievedContainer struct {
	Name                   string                     `json:"name"`
	ConfigMaps             []v1.ConfigMap             `json:"configMaps"`
	ProjectedVolumeMaps    []v1.ConfigMap             `json:"projectedvolumemaps"`
	Secrets                []v1.Secret                `json:"secrets"`
	EmptyDirs              []string                   `json:"emptyDirs"`
	PersistentVolumeClaims []v1.PersistentVolumeClaim `json:"persistentVolumeClaims"`
}

type singularityHub struct {
	Server               string `json:"server"`
	MasterToken          string `json:"master_token"`
	CacheValiditySeconds int    `json:"cache_validity_seconds"`
}

type apptainerOptions struct {
	Executable    string `json:"executable"`
	Fakeroot      bool   `json:"fakeroot"`
	ContainAll    bool   `json:"containall"`
	FuseMode      string `json:"fuseMode"`
	NoInit        bool   `json:"noInit"`
	NoHome        bool   `json:"noHome"`
	NoPrivs       bool   `json:"noPrivs"`
	NvidiaSupport bool   `json:"nvidiaSupport"`
	Cleanenv      bool   `json:"cleanenv"`
	Unsquash      bool   `json:"unsquash"`
}

type volumesOptions struct {
	ScratchArea                 string   `json:"scratch_area"`
	ApptainerCacheDir           string   `json:"apptainer_cachedir"`
	ImageDir                    string   `json:"image_dir"`
	AdditionalDirectoriesInPath []string `json:"additional_directories_in_path"`
	FuseSleepSeconds            int      `json:"fuse_sleep_seconds"`
}

type scriptBuildConfig struct {
	SingularityHub   singularityHub   `json:"SingularityHubProxy"`
	ApptainerOptions apptainerOptions `json:"ApptainerOptions"`
	VolumesOptions   volumesOptions   `json:"Volumes"`
}

type retrievedPodData struct {
	Pod            v1.Pod               `json:"pod"`
	Containers     []retrievedContainer `json:"container"`
	JobScriptBuild scriptBuildConfig    `json:"jobConfig,omitempty"`
	JobScript      string               `json:"jobScript,omitempty"`
}

type podCreateRequests struct {
	Pod                    v1.Pod                     `json:"pod"`
	ConfigMaps             []v1.ConfigMap             `json:"configmaps"`
	Secrets                []v1.Secret                `json:"secrets"`
	PersistentVolumeClaims []v1.PersistentVolumeClaim `json:"persistentvolumes"`
	ProjectedVolumeMaps    []v1.ConfigMap             `json:"projectedvolumesmaps"`
	JobScriptBuilderURL    string                     `json:"jobscriptURL"`
}

type podStatus struct {
	PodName        string               `json:"name"`
	PodUID         string               `json:"UID"`
	PodNamespace   string               `json:"namespace"`
	JobID          string               `json:"JID"`
	Containers     []v1.ContainerStatus `json:"containers"`
	InitContainers []v1.ContainerStatus `json:"initContainers"`
}

type createStruct struct {
	PodUID string `json:"PodUID"`
	PodJID string `json:"PodJID"`
}

type containerLogOpts struct {
	Tail         int       `json:"Tail"`
	LimitBytes   int       `json:"Bytes"`
	Timestamps   bool      `json:"Timestamps"`
	Follow       bool      `json:"Follow"`
	Previous     bool      `json:"Previous"`
	SinceSeconds int       `json:"SinceSeconds"`
	SinceTime    time.Time `json:"SinceTime"`
}

type logStruct struct {
	Namespace     string           `json:"Namespace"`
	PodUID        string           `json:"PodUID"`
	PodName       string           `json:"PodName"`
	ContainerName string           `json:"ContainerName"`
	Opts          containerLogOpts `json:"Opts"`
}

type accelerator struct {
	ResourceType string `json:"resourceType"`
	Model        string `json:"model,omitempty"`
	Available    string `json:"available"`
}

type pingResources struct {
	CPU          string         `json:"cpu,omitempty"`
	Memory       string         `json:"memory,omitempty"`
	Pods         string         `json:"pods,omitempty"`
	Accelerators *[]accelerator `json:"accelerators,omitempty"`
}

type taint struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Effect string `json:"effect"`
}

type pingResponse struct {
	Status    string         `json:"status"`
	Resources *pingResources `json:"resources,omitempty"`
	Taints    *[]taint       `json:"taints,omitempty"`
}

// newValue returns a pointer to a fresh value of the Go type a golden file is named after.
func newValue(kind string) (any, error) {
	switch kind {
	case "RetrievedPodData":
		return &retrievedPodData{}, nil
	case "RetrievedContainer":
		return &retrievedContainer{}, nil
	case "PodCreateRequests":
		return &podCreateRequests{}, nil
	case "PodStatus":
		return &podStatus{}, nil
	case "PodStatusList":
		return &[]podStatus{}, nil
	case "ContainerStatus":
		return &v1.ContainerStatus{}, nil
	case "CreateStruct":
		return &createStruct{}, nil
	case "LogStruct":
		return &logStruct{}, nil
	case "PingResponse":
		return &pingResponse{}, nil
	case "Status":
		return &metav1.Status{}, nil
	}
	return nil, fmt.Errorf("unknown golden type %q", kind)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gen INPUT_DIR OUTPUT_DIR")
		os.Exit(2)
	}
	inputs, outputs := os.Args[1], os.Args[2]
	names, err := filepath.Glob(filepath.Join(inputs, "*.json"))
	if err != nil {
		panic(err)
	}
	sort.Strings(names)
	for _, name := range names {
		base := filepath.Base(name)
		kind := strings.SplitN(base, ".", 2)[0]
		value, err := newValue(kind)
		if err != nil {
			panic(err)
		}
		raw, err := os.ReadFile(name)
		if err != nil {
			panic(err)
		}
		var out []byte
		if err := json.Unmarshal(raw, value); err != nil {
			out = []byte("ERROR: " + err.Error() + "\n")
		} else if out, err = json.Marshal(value); err != nil {
			out = []byte("ERROR: " + err.Error() + "\n")
		}
		if err := os.WriteFile(filepath.Join(outputs, base), out, 0o644); err != nil {
			panic(err)
		}
		fmt.Println(base)
	}
}
