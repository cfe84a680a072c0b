"""``caffe.proto`` of pycaffe: ``from protoseg.caffe.proto import caffe_pb2`` gives protoseg's schema, which reads
the prototxt and caffemodel files of every Caffe fork protoseg knows (``google.protobuf.text_format`` parses
and prints its messages as it did pycaffe's)."""

from protoseg.proto import caffe_pb2

__all__ = ["caffe_pb2"]
