"""study/cli_errors.py: jsonargparse's nested error as one line (the CLI itself: tests/test_train_cli.py)."""

from __future__ import annotations

from study.cli_errors import accepted_options, short_parse_error

# jsonargparse 4.53's message for `train.py fit --config configs/tiny/sft.yaml --model.init_args.lora.rr 3`
NESTED = """Parser key "model":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning.pytorch.core.module.LightningModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'lightning_modules.sft.SFTModule':
        Parser key "lora":
          Does not validate against any of the Union subtypes
          Subtypes: [<class 'common.settings.LoraSettings'>, <class 'NoneType'>]
          Errors:
            - Problem with given class_path 'common.settings.LoraSettings':
                Option 'rr' is not accepted
            - Expected a <class 'NoneType'>
          Given value type: <class 'jsonargparse._util.NestedArg'>
          Given value: NestedArg(key='rr', val='3')
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='lora.rr', val='3')"""


def test_a_nested_typo_names_its_full_path_and_the_closest_option():
    # SFTModule is a subclass-mode class (its options under init_args), LoraSettings a dataclass (directly).
    assert short_parse_error(NESTED) == (
        "model.init_args.lora: no option 'rr' (in common.settings.LoraSettings); did you mean 'r'? "
        "accepted: r, alpha, dropout, target_modules"
    )


def test_a_typo_with_nothing_close_lists_what_is_accepted():
    message = NESTED.replace("'rr'", "'zzz'")
    expected = "(in common.settings.LoraSettings); accepted: r, alpha, dropout, target_modules"
    assert short_parse_error(message).endswith(expected)


def test_the_accepted_options_follow_kwargs_into_the_base_classes():
    # InstructionDataModule passes **kwargs to TokenizedDataModule: batch_size is accepted through it.
    options = accepted_options("datamodules.InstructionDataModule")
    assert {"train_files", "max_length", "batch_size", "tokenizer_name_or_path"} <= set(options)
    assert accepted_options("no.such.Class") == []


def test_other_errors_keep_their_first_line_and_innermost_reason():
    assert short_parse_error("Unrecognized arguments: --trainer.max_step 3") == (
        "unrecognized arguments: --trainer.max_step 3"
    )
    assert short_parse_error('Parser key "config": File does not exist: x.yaml') == (
        'Parser key "config": File does not exist: x.yaml'
    )
