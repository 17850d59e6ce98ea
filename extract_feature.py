"""NNM's name for the pretext stage: train the pretext model and mine neighbours, exactly as simclr.py.

    python extract_feature.py --config_env configs/env.yml --config_exp configs/pretext/simclr_stl10.yml

(Not the companion tool feature_extract.py, which writes a trained model's features to files.)
"""
from simclr import main

if __name__ == '__main__':
    main()
