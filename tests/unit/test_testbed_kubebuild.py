"""The Kubernetes build recipe (hack/testbedlib/kubebuild.py): the wrapper go.mod derived from k/k's."""

from __future__ import annotations

import pytest
from testbedlib.kubebuild import (
    BINARIES,
    TOOLS_GO,
    BuildError,
    ldflags,
    staging_replaces,
    wrapper_gomod,
)

# Trimmed from k8s.io/kubernetes v1.35.4's go.mod: both require forms and a non-staging v0.0.0 lookalike.
KK_GOMOD = """\
module k8s.io/kubernetes

go 1.25.0

godebug default=go1.25

require (
\tgithub.com/blang/semver/v4 v4.0.0
\tgo.etcd.io/etcd/server/v3 v3.6.5
\tk8s.io/api v0.0.0
\tk8s.io/apiserver v0.0.0
\tk8s.io/klog/v2 v2.130.1
\tk8s.io/kube-openapi v0.0.0-20250910181357-589584f1c912
)

require k8s.io/cri-client v0.0.0

require (
\tgithub.com/google/cel-go v0.26.0 // indirect
\tk8s.io/externaljwt v0.0.0 // indirect
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver
)
"""


def test_every_v000_staging_module_is_replaced_by_its_published_twin() -> None:
    assert staging_replaces(KK_GOMOD, "1.35.4") == {
        "k8s.io/api": "v0.35.4",
        "k8s.io/apiserver": "v0.35.4",
        "k8s.io/cri-client": "v0.35.4",
        "k8s.io/externaljwt": "v0.35.4",  # `// indirect` requirements count too
    }


def test_modules_replaced_by_a_staging_path_count_even_without_a_v000_require() -> None:
    gomod = "module k8s.io/kubernetes\n\nreplace k8s.io/kms => ./staging/src/k8s.io/kms\n"
    assert staging_replaces(gomod, "1.35.4") == {"k8s.io/kms": "v0.35.4"}


def test_wrapper_gomod_keeps_kks_go_and_godebug_lines_and_requires_the_tag() -> None:
    text = wrapper_gomod(KK_GOMOD, "1.35.4")
    assert "\ngo 1.25.0\n" in text
    assert "\ngodebug default=go1.25\n" in text
    assert "\nrequire k8s.io/kubernetes v1.35.4\n" in text
    assert "\tk8s.io/api => k8s.io/api v0.35.4\n" in text
    assert "./staging" not in text


def test_a_gomod_without_staging_modules_is_an_error_not_a_silent_build() -> None:
    with pytest.raises(BuildError, match="no v0.0.0 staging modules"):
        staging_replaces("module k8s.io/kubernetes\n\ngo 1.25.0\n", "1.35.4")


def test_tools_file_pins_every_binary_and_version_stamps_match_kks() -> None:
    for pkg in BINARIES.values():
        assert f'_ "{pkg}"' in TOOLS_GO
    flags = ldflags("1.35.4")
    assert "-X k8s.io/component-base/version.gitVersion=v1.35.4" in flags
    assert "-X k8s.io/client-go/pkg/version.gitMinor=35" in flags
