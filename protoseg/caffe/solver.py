"""pycaffe's ``SGDSolver``, for the scoring half of training scripts."""

from __future__ import annotations

import os
from typing import Any

from google.protobuf import text_format

from protoseg.caffe import TEST, TRAIN, Net
from protoseg.caffe.data import read_text
from protoseg.errors import FormatError, ProtosegError
from protoseg.proto import caffe_pb2


class SGDSolver:
    """pycaffe's ``SGDSolver`` for the evaluation half of a training script (FCN's ``solve.py`` and
    ``score.seg_tests``): it reads the solver prototxt and builds ``net`` (TRAIN) and ``test_nets`` (TEST) as
    Caffe's ``Solver`` does, net paths relative to the working directory, so a script can load weights into
    ``solver.net``, do surgery on its ``params`` and score ``test_nets``. protoseg converts nets for inference
    only: ``step`` and ``solve`` raise, and ``iter`` stays 0.
    """

    def __init__(self, solver_file: str | os.PathLike) -> None:
        param = caffe_pb2.SolverParameter()
        try:
            text_format.Merge(read_text(solver_file, "solver prototxt"), param)
        except text_format.ParseError as exc:
            raise FormatError(f"{os.fspath(solver_file)}: not a solver prototxt ({exc})") from None
        inline = [f for f in ("net_param", "train_net_param") if param.HasField(f)] + \
            (["test_net_param"] if len(param.test_net_param) else [])
        if inline:
            raise ProtosegError(f"{os.fspath(solver_file)}: {', '.join(inline)} (a net written inside the solver) "
                                "is not supported; put the net in its own prototxt and name it with net: or "
                                "train_net:")
        if param.train_state.stage or any(s.stage for s in param.test_state):
            raise ProtosegError(f"{os.fspath(solver_file)}: train_state/test_state stages are not supported")
        train = param.train_net or param.net
        if not train:
            raise ProtosegError(f"{os.fspath(solver_file)}: names no net (give net: or train_net:)")
        self.param = param
        self.net = Net(train, TRAIN)
        tests = list(param.test_net)
        if param.net:  # Caffe: the generic net serves the test_iter entries the test_net files leave
            tests += [param.net] * max(0, len(param.test_iter) - len(tests))
        self.test_nets = [Net(path, TEST) for path in tests]
        self.iter = 0

    def step(self, iters: int) -> None:
        raise ProtosegError("SGDSolver.step(): protoseg converts nets for inference only; train in PyTorch "
                            "(protoseg.load gives a torch module) and score the nets here")

    def solve(self, *args: Any) -> None:
        raise ProtosegError("SGDSolver.solve(): protoseg converts nets for inference only; train in PyTorch "
                            "(protoseg.load gives a torch module) and score the nets here")

