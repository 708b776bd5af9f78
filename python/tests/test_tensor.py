"""pyproxy.Tensor: an explicit tensor, a dict that encodes as any result."""

import json
import os
import sys
import unittest

from pyproxy import Tensor
from pyproxy_server import big_json


class TensorTest(unittest.TestCase):
    def test_a_dict_of_datatype_shape_and_data(self):
        t = Tensor([], (2, 0, 3), "FP32")
        self.assertIsInstance(t, dict)
        self.assertEqual(t, {"datatype": "FP32", "shape": [2, 0, 3], "data": []})
        self.assertEqual((t.data, t.shape, t.datatype), ([], [2, 0, 3], "FP32"))
        self.assertEqual(Tensor([1], [1]).datatype, None)
        self.assertEqual(repr(t), "Tensor(shape=[2, 0, 3], datatype='FP32')")

    def test_encodes_as_the_server_encodes_results(self):
        t = Tensor([[1, 2]], [1, 2], "INT8")
        self.assertEqual(
            json.loads(big_json.encode_bytes({"result": {"y": t}})),
            {"result": {"y": {"datatype": "INT8", "shape": [1, 2], "data": [[1, 2]]}}},
        )

    def test_takes_a_numpy_like_array_sent_as_its_tolist(self):
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "models"))
        try:
            from arrays import FakeArray
        finally:
            sys.path.pop(0)
        t = Tensor(FakeArray([[0.5, 1.5]], "float32"), [1, 2], "FP32")
        self.assertEqual(
            json.loads(big_json.encode_bytes({"result": {"y": t}})),
            {"result": {"y": {"datatype": "FP32", "shape": [1, 2], "data": [[0.5, 1.5]]}}},
        )

    def test_refuses_what_is_not_a_tensor(self):
        for args, error in [
            (("1,2", [2]), TypeError),
            (([1], 1), TypeError),
            (([1], "1"), TypeError),
            (([1], [1.0]), TypeError),
            (([1], [True]), TypeError),
            (([1], [-1]), ValueError),
            (([1], [1] * 65), ValueError),
            # The gateway reads no dimension, nor element count, past 2^53.
            (([], [2 ** 53, 0]), ValueError),
            (([1], [2 ** 31] * 3), ValueError),
            (([1], [1], 32), TypeError),
            (([1], [1], "FP128"), ValueError),
            (([1], [1], "BF16"), ValueError),
        ]:
            with self.subTest(args=args), self.assertRaises(error):
                Tensor(*args)


if __name__ == "__main__":
    unittest.main()
