"""Declared inputs with constraints: what loads, and what is refused."""

import unittest

from pyproxy_server.declared import DeclarationError, check_pattern, read_inputs, read_outputs
from pyproxy_server.errors import ModelLoadError
from pyproxy_server.models import ModelRegistry

from ._client import MODELS_DIR


class ReadInputsTest(unittest.TestCase):
    def refused(self, inputs, *words):
        with self.assertRaises(DeclarationError) as caught:
            read_inputs(inputs)
        for word in words:
            self.assertIn(word, str(caught.exception))
        return str(caught.exception)

    def test_every_keyword_loads_and_is_described_as_declared(self):
        inputs = {
            "age": "integer",
            "p": {"type": "number", "minimum": 0, "maximum": 1, "description": "a probability"},
            "n": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10, "multipleOf": 2},
            "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[a-z]+(-[a-z]+)*$"},
            "mode": {"enum": ["fast", "exact"]},
            "level": {"type": "integer", "enum": [1, 2, 3], "optional": True, "nullable": True},
            "points": {"type": "array", "items": "number", "minItems": 3, "maxItems": 100},
            "box": {
                "type": "object",
                "properties": {"x": "number", "label": {"type": "string", "optional": True}},
                "additionalProperties": False,
            },
        }
        self.assertEqual(read_inputs(inputs), inputs)

    def test_unknown_or_misplaced_keywords_are_refused_naming_field_and_keyword(self):
        self.refused({"p": {"type": "number", "ge": 0}}, "p:", "unsupported keyword 'ge'")
        self.refused({"p": {"type": "number", "maxLength": 3}}, "p:", "'maxLength' does not apply to type 'number'")
        self.refused({"p": {"minimum": 0}}, "'type' is required")
        self.refused({"p": {"type": "float"}}, "'type' must be one of")
        self.refused({"b": {"type": "object", "properties": {"c": {"type": "string", "format": "email"}}}},
                     "b.c:", "'format'")

    def test_bounds_must_be_finite_ordered_numbers(self):
        for bad in (float("nan"), float("inf"), "1", True, 2**60):
            self.refused({"p": {"type": "number", "minimum": bad}}, "p:", "'minimum'")
        self.refused({"p": {"type": "number", "minimum": 2, "maximum": 1}}, "no number is within the bounds")
        self.refused({"p": {"type": "number", "exclusiveMinimum": 1, "maximum": 1}}, "no number is within")
        self.refused({"p": {"type": "number", "minimum": 1, "exclusiveMinimum": 0}}, "not both")
        self.refused({"p": {"type": "number", "multipleOf": 0}}, "'multipleOf' must be above 0")
        self.refused({"s": {"type": "string", "minLength": 3, "maxLength": 2}}, "'minLength' is above")
        self.refused({"s": {"type": "string", "maxLength": -1}}, "'maxLength' must be an integer")
        self.refused({"a": {"type": "array", "minItems": 2.5}}, "'minItems' must be an integer")
        self.refused({"n": {"type": "integer", "minimum": 0.2, "maximum": 0.8}}, "no integer is within")
        self.refused({"n": {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 2}}, "no integer is within")
        read_inputs({"n": {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 3}})
        read_inputs({"p": {"type": "number", "minimum": 1, "maximum": 1}})

    def test_enum_must_hold_json_scalars_of_the_type(self):
        self.refused({"m": {"enum": []}}, "'enum' must be a list of 1 to")
        self.refused({"m": {"enum": [object()]}}, "'enum' values must be")
        self.refused({"m": {"enum": [[1]]}}, "'enum' values must be")
        self.refused({"m": {"enum": [float("nan")]}}, "'enum' values must be")
        self.refused({"m": {"type": "string", "enum": ["a", 1]}}, "'enum' value 1 is not of type 'string'")
        self.refused({"m": {"enum": list(range(257))}}, "1 to 256")
        read_inputs({"m": {"type": "number", "enum": [1, 1.5, None]}})

    def test_declaration_size_and_depth_are_bounded(self):
        self.refused({"f%d" % i: {"type": "number"} for i in range(1001)}, "more than 1000 constrained fields")
        deep = "number"
        for _ in range(10):
            deep = {"type": "array", "items": deep}
        self.refused({"d": deep}, "nested deeper than 8 levels")
        nested = {"type": "number"}
        for _ in range(10):
            nested = {"type": "object", "properties": {"x": nested}}
        self.refused({"o": nested}, "o.x.x.x.x.x.x.x.x.x:", "nested deeper")
        self.refused({"a": {"type": "array", "items": "number?"}}, "a.items:", "cannot be optional")
        patterns = {"s%d" % i: {"type": "string", "pattern": "a{1000}"} for i in range(20)}
        self.refused(patterns, "s19: 'pattern'", "more than 20000 automaton states")
        del patterns["s19"]
        read_inputs(patterns)

    def test_patterns_outside_the_linear_subset_are_refused(self):
        for good in ("^[a-z]+$", "(a+)+$", "^(cat|dog)s?$", "\\d{3}-\\d{4}", "[\\w.-]+@[\\w-]+", "^\\u00e9\\x41.$", ""):
            check_pattern(good)
        for bad, word in (
            ("(?=a)", "lookaround"), ("(?<n>a)", "named groups"), ("(?i)a", "flags"), ("(a)\\1", "backreferences"),
            ("\\bword", "\\b"), ("\\p{L}", "\\p"), ("a**", "after a quantifier"), ("[]", "empty class"),
            ("[b-a]", "out of order"), ("(a", "unclosed group"), ("a)", "unmatched"), ("{", "nothing to repeat"),
            ("a{2,1}", "m < n"), ("a{1001}", "above 1000"), ("(a{1000}){1000}", "states"), ("x" * 1001, "longer"),
            ("]", "unescaped"), ("\\", "ends with"), ("^*", "after an anchor"), ("\\u12", "hex digits"),
        ):
            with self.assertRaises(DeclarationError, msg=bad) as caught:
                check_pattern(bad)
            self.assertIn(word, str(caught.exception), bad)
        self.refused({"s": {"type": "string", "pattern": "(?=x)"}}, "s:", "'pattern'", "lookaround")

    def test_patterns_read_as_the_host_reads_them(self):
        # An escaped surrogate pair is one character (RegExp's u flag), one state on the host.
        self.assertEqual(check_pattern("\\uD83D\\uDE00"), 2)
        self.assertEqual(check_pattern("\\uD83D\\uDE00{3}"), 4)
        check_pattern("[\\uD83D\\uDE00-\\uD83D\\uDE4F]")
        with self.assertRaises(DeclarationError):
            check_pattern("[\\uDE00-\\uD83D]")
        # A group of an anchor may be repeated, a bare anchor not.
        self.assertEqual(check_pattern("(^)*a"), 5)
        # Groups nested 100 deep load; deeper ones are refused, not a RecursionError.
        check_pattern("(" * 100 + "a" + ")" * 100)
        with self.assertRaises(DeclarationError) as caught:
            check_pattern("(" * 400 + ")" * 400)
        self.assertIn("nested deeper than 100", str(caught.exception))

    def test_a_type_of_none_is_refused_not_read_as_missing(self):
        self.refused({"x": {"type": None, "enum": [1]}}, "x:", "'type' must be one of")


class ModelInputsTest(unittest.TestCase):
    def setUp(self):
        self.registry = ModelRegistry(MODELS_DIR)

    def source(self, inputs):
        return "class M:\n    inputs = %r\n    def execute(self, m):\n        return m\n" % (inputs,)

    def test_a_constrained_model_loads_and_describes_its_constraints(self):
        inputs = {"x": "number", "p": {"type": "number", "minimum": 0, "maximum": 1}}
        desc = self.registry.add("c", {"source": self.source(inputs)})
        self.assertEqual(desc["inputs"], inputs)

    def test_a_bad_constraint_fails_the_load_naming_class_field_and_keyword(self):
        with self.assertRaises(ModelLoadError) as caught:
            self.registry.add("c", {"source": self.source({"p": {"type": "number", "ge": 0}})})
        self.assertEqual(
            str(caught.exception), "Cannot load model class M: inputs: p: unsupported keyword 'ge'",
        )

    def test_string_forms_are_read_as_before(self):
        with self.assertRaises(ModelLoadError) as caught:
            self.registry.add("c", {"source": self.source({"p": "float"})})
        self.assertIn("trailing ? for an optional field", str(caught.exception))


class ReadOutputsTest(unittest.TestCase):
    def refused(self, outputs, *words):
        with self.assertRaises(DeclarationError) as caught:
            read_outputs(outputs)
        for word in words:
            self.assertIn(word, str(caught.exception))

    def test_a_tensor_description_loads_as_declared(self):
        outputs = {
            "label": "string",
            "scores": {"type": "array", "items": {"type": "number", "datatype": "FP32"}},
            "boxes": {
                "type": "array",
                "description": "x, y, w, h per detection",
                "items": {"type": "array", "items": {"type": "integer", "datatype": "UINT16"}},
            },
            "mask": {"type": "boolean", "datatype": "BOOL", "optional": True, "nullable": False},
            "meta": {"type": "object"},
        }
        self.assertEqual(read_outputs(outputs), outputs)

    def test_constraints_and_misfit_datatypes_are_refused(self):
        self.refused({"p": {"type": "number", "minimum": 0}}, "p:", "'minimum' does not apply to outputs")
        self.refused({"p": {"enum": [1, 2]}}, "'type' is required")
        self.refused({"p": {"type": "object", "properties": {"a": "number"}}}, "'properties' does not apply")
        self.refused({"p": {"type": "number", "datatype": "INT8"}}, "one of FP16, FP32, FP64 for type 'number'")
        self.refused({"p": {"type": "integer", "datatype": "int8"}}, "'datatype' must be one of INT8")
        self.refused({"p": {"type": "array", "datatype": "FP32"}}, "'datatype' applies to types")
        self.refused({"p": {"type": "number", "items": "number"}}, "'items' does not apply to type 'number'")
        self.refused({"p": {"type": "array", "items": "float"}}, "p.items:", "unknown type")
        self.refused({"p": {"type": "array", "items": {"type": "number", "optional": True}}}, "cannot be optional")
        # Inputs take no datatype: the request's tensor says it.
        with self.assertRaises(DeclarationError):
            read_inputs({"p": {"type": "number", "datatype": "FP32"}})

    def test_labels_name_an_array_outputs_classes(self):
        outputs = {"probs": {"type": "array", "items": "number", "labels": ["cat", "dog"]}}
        self.assertEqual(read_outputs(outputs), outputs)
        # A tuple is read as the list it is.
        self.assertEqual(
            read_outputs({"p": {"type": "array", "labels": ("a",)}}),
            {"p": {"type": "array", "labels": ["a"]}},
        )
        self.refused({"p": {"type": "number", "labels": ["a"]}}, "p:", "'labels' applies to an output of type 'array'")
        self.refused(
            {"p": {"type": "array", "items": {"type": "array", "labels": ["a"]}}},
            "p.items:", "not to its items",
        )
        self.refused({"p": {"type": "array", "labels": "cat"}}, "'labels' must be a list")
        self.refused({"p": {"type": "array", "labels": [1]}}, "'labels' must be a list")
        self.refused({"p": {"type": "array", "labels": ["x" * 1001]}}, "at most 1000 characters")
        # Inputs take no labels.
        with self.assertRaises(DeclarationError):
            read_inputs({"p": {"type": "array", "labels": ["a"]}})


class ModelOutputsTest(unittest.TestCase):
    def setUp(self):
        self.registry = ModelRegistry(MODELS_DIR)

    def source(self, outputs):
        return "class M:\n    outputs = %r\n    def execute(self, m):\n        return m\n" % (outputs,)

    def test_dict_forms_load_and_are_described(self):
        outputs = {"y": {"type": "array", "items": {"type": "number", "datatype": "FP32"}}, "n": "integer"}
        self.assertEqual(self.registry.add("o", {"source": self.source(outputs)})["outputs"], outputs)

    def test_a_constraint_fails_the_load_naming_class_field_and_keyword(self):
        with self.assertRaises(ModelLoadError) as caught:
            self.registry.add("o", {"source": self.source({"y": {"type": "number", "maximum": 1}})})
        self.assertIn("Cannot load model class M: outputs: y: 'maximum' does not apply to outputs", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
