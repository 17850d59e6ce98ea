"""NNM's name for the pretext stage: train the pretext model and mine neighbours, exactly as simclr.py.

    python extract_feature.py --config_env configs/env.yml --config_exp configs/pretext/simclr_stl10.yml

NNM's replication calls its pretext step by this name, so the command stays; it says what it is when it starts,
because the companion tool feature_extract.py (the same words the other way round) writes a trained model's
features to files instead.
"""
import sys

from simclr import main

NOTE = ('extract_feature.py is the pretext stage under NNM\'s name (the same as simclr.py); to write a trained '
        'model\'s features to files, use feature_extract.py')

if __name__ == '__main__':
    print(NOTE, file=sys.stderr)
    main()
